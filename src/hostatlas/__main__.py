from hostatlas.cli import app

app(prog_name="hostatlas")
