"""The real AUTOMATIC1111 webui 1.10.1 and WebUI Forge (and Forge Classic) as test hosts: built once into a
cache, started per session.

`environment` builds (or finds) each host's tree, its venv and the tiny checkpoints (`checkpoints.py`,
`forge_checkpoints.py`, run by the host's own interpreter); `server` starts a host with this checkout
installed as an extension; `fixtures` gives the tests their servers; `probe/` is a test-only extension that records
what the webui ran (sigmas, skip shapes, attention shapes, hooks left on the model).
"""
