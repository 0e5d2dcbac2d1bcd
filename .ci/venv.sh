# Sourced by .ci/run and .ci/demo from the repository root: build the pinned environment (torch held to
# the local CPU wheel by .ci/constraints.txt) into .venv-ci-<hash of the pins>, once per set of pins, and
# activate it.
key=$(cat requirements-test.txt requirements-nodeps.txt requirements-oracle.txt .ci/constraints.txt | sha256sum | cut -c1-12)
venv=".venv-ci-$key"
if [ ! -f "$venv/ready" ]; then
  rm -rf .venv-ci-*
  python3 -m venv "$venv"
  "$venv/bin/pip" install -q -c .ci/constraints.txt -r requirements-test.txt
  "$venv/bin/pip" install -q --no-deps -r requirements-nodeps.txt
  # The official package is also called `hidiffusion`: keep it out of site-packages (see testbed/official.py).
  "$venv/bin/pip" install -q --no-deps --target "$venv/oracle" -r requirements-oracle.txt
  touch "$venv/ready"
fi
. "$venv/bin/activate"
python -c "import torch; assert torch.__version__.startswith('2.13.0'), torch.__version__"
