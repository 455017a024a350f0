"""nginx and Apache configuration trees written by the tests: includes, virtual hosts, names, logs."""

from __future__ import annotations

from pathlib import Path

from hostatlas_agent.discovery.apache import read_apache
from hostatlas_agent.discovery.certificates import CertificateFacts, CertificateParser
from hostatlas_agent.discovery.domains import build_domains
from hostatlas_agent.discovery.nginx import parse, read_nginx, tokenize


def write(path: Path, text: str) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(text)
    return path


def nginx_tree(root: Path) -> Path:
    conf = write(root / "nginx" / "nginx.conf", """
user www-data;
error_log logs/error.log warn;   # relative: under the prefix
events { worker_connections 768; }
http {
    access_log /var/log/nginx/access.log;
    include mime.types;          # absent: skipped
    include conf.d/*.conf;
    upstream app { server 127.0.0.1:8000; }
}
stream { server { listen 5353; proxy_pass 127.0.0.1:53; } }
""")
    write(root / "nginx" / "conf.d" / "app.conf", f"""
server {{
    listen 443 ssl http2;
    listen [::]:443 ssl;
    server_name app.example.test "www.example.test" *.wild.example.test ~^regex\\.example$ _;
    ssl_certificate {root}/certs/app.pem;
    ssl_certificate_key {root}/certs/app.key;
    access_log {root}/logs/app.access.log main;
    location / {{
        proxy_pass http://app;   # a brace {{ in a comment must not open a block
        error_log '{root}/logs/app location.log';
    }}
    location ~ "^/(a|b){{2}}$" {{ return 204; }}
}}
server {{
    listen 80;
    server_name app.example.test plain.example.test localhost .dotted.example.test 192.0.2.7;
    access_log off;
    return 301 https://$host$request_uri;
}}
""")
    write(root / "nginx" / "conf.d" / "loop.conf", "include conf.d/loop.conf;\n")  # includes itself
    write(root / "nginx" / "conf.d" / "extra.conf", "include more/*.conf;\n")  # relative to conf.d/
    write(root / "nginx" / "conf.d" / "more" / "other.conf", """
server { listen 127.0.0.2:8443 ssl; ssl on; server_name other.example.test; ssl_certificate certs/o.pem; }
server { listen unix:/run/app.sock; server_name "~^(?<sub>.+)\\.example\\.test$"; }
""")
    return conf


def test_nginx_vhosts_are_read_through_includes(tmp_path: Path) -> None:
    config = read_nginx([str(nginx_tree(tmp_path)), str(tmp_path / "absent.conf")])
    vhosts = {tuple(v.server_names): v for v in config.vhosts}
    assert len(config.vhosts) == 4  # the stream server is not a web vhost
    app = vhosts[("app.example.test", "www.example.test", "*.wild.example.test", "~^regex\\.example$", "_")]
    assert app.ports == [443, 443]
    assert app.ssl_endpoints == [("127.0.0.1", 443), ("127.0.0.1", 443)]
    assert app.certificate_path == f"{tmp_path}/certs/app.pem"
    assert sorted(app.log_paths) == [f"{tmp_path}/logs/app location.log", f"{tmp_path}/logs/app.access.log"]
    assert app.config_file == str(tmp_path / "nginx" / "conf.d" / "app.conf")
    plain = vhosts[("app.example.test", "plain.example.test", "localhost", ".dotted.example.test", "192.0.2.7")]
    assert (plain.ports, plain.ssl_endpoints, plain.certificate_path) == ([80], [], None)
    other = vhosts[("other.example.test",)]
    assert other.ssl_endpoints == [("127.0.0.2", 8443)]  # `ssl on;` and a specific address
    assert other.certificate_path == str(tmp_path / "nginx" / "certs" / "o.pem")  # relative to the prefix
    assert sorted(config.log_paths) == sorted([
        str(tmp_path / "nginx" / "logs" / "error.log"), "/var/log/nginx/access.log",
        f"{tmp_path}/logs/app.access.log", f"{tmp_path}/logs/app location.log"])


def test_nginx_domains_keep_wildcards_and_prefer_the_https_vhost(tmp_path: Path) -> None:
    config = read_nginx([str(nginx_tree(tmp_path))])
    facts = CertificateFacts(subject="CN=app.example.test", issuer="CN=app.example.test",
                             domains=["app.example.test"], not_after="2031-02-03T04:05:06Z",
                             fingerprint_sha256="ab" * 32)
    domains = build_domains(config.vhosts, {f"{tmp_path}/certs/app.pem": facts}, probe=None,
                            parser=CertificateParser())
    assert [d["name"] for d in domains] == [
        "*.dotted.example.test", "*.wild.example.test", "app.example.test", "dotted.example.test",
        "other.example.test", "plain.example.test", "www.example.test"]
    by_name = {d["name"]: d for d in domains}
    assert by_name["app.example.test"] == {
        "name": "app.example.test", "source": "nginx", "ssl_expiry": "2031-02-03",
        "certificate": {"path": f"{tmp_path}/certs/app.pem", "not_after": "2031-02-03T04:05:06Z",
                        "fingerprint_sha256": "ab" * 32},
        "served_certificate": None}
    assert by_name["plain.example.test"]["ssl_expiry"] is None
    assert by_name["plain.example.test"]["certificate"] is None
    assert by_name["other.example.test"]["certificate"] is None  # its file is not readable as a certificate


def test_the_nginx_tokenizer_handles_quotes_comments_and_variables() -> None:
    assert list(tokenize('set $a "x y;{}"; # comment ; {\nreturn 200 \'it\\\'s\';')) == [
        "set", "$a", "x y;{}", ";", "return", "200", "it's", ";"]
    assert list(tokenize("add_header X ${host}a;")) == ["add_header", "X", "${host}a", ";"]
    tree = parse("http { server { listen 80; } } }} stray")  # unbalanced braces do not raise
    assert tree[0].name == "http" and tree[0].block is not None
    assert tree[0].block[0].block is not None and tree[0].block[0].block[0].args == ["80"]


def apache_tree(root: Path) -> Path:
    server_root = root / "apache2"
    write(server_root / "envvars", "unset HOME\nexport APACHE_RUN_USER=www-data\n"
                                   "export APACHE_LOG_DIR=/var/log/apache2$SUFFIX\n")
    conf = write(server_root / "apache2.conf", f"""
# Global configuration
ServerRoot "{server_root}"
Define SITE_LOGS {root}/site-logs
ErrorLog ${{APACHE_LOG_DIR}}/error.log
IncludeOptional mods-enabled/*.load
Include ports.conf
IncludeOptional sites-enabled/*.conf
IncludeOptional conf-enabled/
""")
    write(server_root / "ports.conf", "Listen 80\n<IfModule ssl_module>\n    Listen 443\n</IfModule>\n")
    write(server_root / "sites-enabled" / "shop.conf", """
<VirtualHost *:80>
    ServerName shop.example.test
    ServerAlias www.shop.example.test \\
                old.shop.example.test
    CustomLog ${SITE_LOGS}/shop_access.log combined
</VirtualHost>
<IfModule mod_ssl.c>
    <VirtualHost _default_:443>
        ServerName https://shop.example.test:443
        SSLEngine on
        SSLCertificateFile certs/shop.pem
        ErrorLog "|/usr/bin/rotatelogs /var/log/x 86400"
        CustomLog "${SITE_LOGS}/shop ssl.log" combined
    </VirtualHost>
</IfModule>
""")
    write(server_root / "conf-enabled" / "nested" / "api.conf", """
<VirtualHost 192.0.2.10:8443 [::1]:8443>
    ServerName api.example.test
    SSLEngine On
    SSLCertificateFile /etc/ssl/api.pem
    TransferLog ${UNDEFINED}/api.log
</VirtualHost>
""")
    write(server_root / "sites-enabled" / "self.conf", f"Include {server_root}/sites-enabled/self.conf\n")
    return conf


def test_apache_vhosts_are_read_through_includes_and_variables(tmp_path: Path) -> None:
    config = read_apache([str(apache_tree(tmp_path)), "/nonexistent/httpd.conf"])
    by_first = {v.server_names[0]: v for v in config.vhosts if v.ssl_endpoints}
    plain = [v for v in config.vhosts if not v.ssl_endpoints]
    assert len(plain) == 1
    assert plain[0].server_names == ["shop.example.test", "www.shop.example.test", "old.shop.example.test"]
    assert plain[0].ports == [80]
    shop = by_first["shop.example.test"]
    assert shop.ports == [443] and shop.ssl_endpoints == [("127.0.0.1", 443)]
    assert shop.certificate_path == str(tmp_path / "apache2" / "certs" / "shop.pem")
    assert shop.log_paths == [f"{tmp_path}/site-logs/shop ssl.log"]
    api = by_first["api.example.test"]
    assert api.ssl_endpoints == [("192.0.2.10", 8443), ("::1", 8443)]
    assert api.log_paths == []  # an undefined variable leaves no usable path
    assert sorted(config.log_paths) == sorted([
        "/var/log/apache2/error.log", f"{tmp_path}/site-logs/shop_access.log", f"{tmp_path}/site-logs/shop ssl.log"])
    domains = build_domains(config.vhosts, {}, probe=None, parser=CertificateParser())
    assert [(d["name"], d["source"]) for d in domains] == [
        ("api.example.test", "apache"), ("old.shop.example.test", "apache"), ("shop.example.test", "apache"),
        ("www.shop.example.test", "apache")]
