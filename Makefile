# genvs: two commands do everything on a fresh machine.
#   make demo   the main job (synthetic cars, the shipped model, an orbit video + GIF under outputs/demo/)
#   make test   the linter (ruff, configured in pyproject.toml), unit tests + every notebook under nbval in smoke mode
# Both depend on `make install`, which builds .venv once and again only when pyproject.toml, constraints.txt or
# overrides.txt changes: genvs's dependency ranges from pyproject.toml, at the exact versions pinned in
# constraints.txt, installed by uv (pip installs uv itself into .venv first). overrides.txt lifts k-diffusion's
# dctorch's numpy<2, so the environment runs numpy 2, as Colab does.

PYTHON ?= python3
VENV   := .venv
PY     := $(VENV)/bin/python
UV     := $(VENV)/bin/uv
STAMP  := $(VENV)/.installed

.PHONY: install constraints demo test lint unit notebooks bench clean

install: $(STAMP)

$(STAMP): pyproject.toml constraints.txt overrides.txt
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --disable-pip-version-check -c constraints.txt uv
	$(UV) pip install --python $(PY) --compile-bytecode -c constraints.txt --override overrides.txt -e ".[dev]"
	$(PY) -c "import numpy, torch, torchvision, diffusers, genvs.denoiser; print('numpy', numpy.__version__, '| torch', torch.__version__, '| torchvision', torchvision.__version__, '| diffusers', diffusers.__version__, '| k-diffusion OK')"
	touch $(STAMP)

# constraints.txt anew from pyproject.toml's ranges (its current pins preferred, its comment lines kept).
constraints: $(STAMP)
	grep '^#' constraints.txt > $(VENV)/constraints.header
	$(UV) pip compile pyproject.toml --extra dev --override overrides.txt --python-version 3.11 \
		--no-annotate --no-header --quiet -o constraints.txt
	cat $(VENV)/constraints.header constraints.txt > $(VENV)/constraints.new && mv $(VENV)/constraints.new constraints.txt

demo: install
	$(PY) -m genvs demo --out outputs/demo

lint: install
	$(VENV)/bin/ruff check .

unit: install
	OMP_NUM_THREADS=1 $(PY) -m pytest tests

notebooks: install
	GENVS_SMOKE=1 OMP_NUM_THREADS=1 $(PY) -m pytest --nbval-lax --nbval-current-env notebooks

# Tests run single-threaded: their tensors are tiny, and on shared cores torch's thread pool
# stalls (measured here: a 200-step voxel fit took 1.2 s on 1 thread, 15 s on 2 with a busy neighbour).
test: lint
	GENVS_SMOKE=1 OMP_NUM_THREADS=1 $(PY) -m pytest tests notebooks --nbval-lax --nbval-current-env

bench: install
	for script in benchmarks/bench_*.py; do $(PY) $$script || exit 1; done
	$(PY) benchmarks/table.py

clean:
	rm -rf $(VENV) outputs *.egg-info
