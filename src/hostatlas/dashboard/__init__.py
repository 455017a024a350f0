"""The web dashboard: server-rendered pages (Jinja2, htmx, uPlot; no build step, no CDN) over the same domain
services, scopes and team walls as the REST API. ``site.install`` adds it to the app."""
