"""`deepdraft serve`: the REST API, a run's live events over SSE, and the web page, in one process.

`app.create_app` builds the application; the modules beside it each do one job (`runs`: the worker
pool; `events`: the SSE stream; `kbs`: uploads and search; `reports`: report formats; `security`:
who may connect). Needs the `server` extra: ``pip install "deepdraft[server]"``.
"""
