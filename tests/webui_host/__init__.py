"""The real AUTOMATIC1111 webui 1.10.1 as a test host: built once into a cache, started per session.

`environment` builds (or finds) the webui tree, its venv and the tiny checkpoints (`checkpoints.py`,
run by the webui's own interpreter); `server` starts a webui with this checkout installed as an
extension; `fixtures` gives the tests their servers; `probe/` is a test-only extension that records
what the webui ran (sigmas, skip shapes, attention shapes, hooks left on the model).
"""
