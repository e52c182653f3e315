# genvs: two commands do everything on a fresh machine.
#   make demo   the main job (synthetic cars, the shipped model, an orbit video + GIF under outputs/demo/)
#   make test   unit tests + every notebook under nbval in smoke mode
# Both depend on `make install`, which builds .venv once and again only when pyproject.toml or constraints.txt
# changes: genvs's dependency ranges from pyproject.toml, at the exact versions pinned in constraints.txt.

PYTHON ?= python3
VENV   := .venv
PY     := $(VENV)/bin/python
STAMP  := $(VENV)/.installed

.PHONY: install demo test unit notebooks bench clean

install: $(STAMP)

$(STAMP): pyproject.toml constraints.txt
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --upgrade "pip>=23"
	$(PY) -m pip install -c constraints.txt -e ".[dev]"
	$(PY) -c "import torch, torchvision, k_diffusion, diffusers; print('torch', torch.__version__, '| torchvision', torchvision.__version__, '| diffusers', diffusers.__version__, '| k-diffusion OK')"
	touch $(STAMP)

demo: install
	$(PY) -m genvs demo --out outputs/demo

unit: install
	OMP_NUM_THREADS=1 $(PY) -m pytest tests

notebooks: install
	GENVS_SMOKE=1 OMP_NUM_THREADS=1 $(PY) -m pytest --nbval-lax --nbval-current-env notebooks

# Tests run single-threaded: their tensors are tiny, and on shared cores torch's thread pool
# stalls (measured here: a 200-step voxel fit took 1.2 s on 1 thread, 15 s on 2 with a busy neighbour).
test: install
	GENVS_SMOKE=1 OMP_NUM_THREADS=1 $(PY) -m pytest tests notebooks --nbval-lax --nbval-current-env

bench: install
	for script in benchmarks/bench_*.py; do $(PY) $$script || exit 1; done
	$(PY) benchmarks/table.py

clean:
	rm -rf $(VENV) outputs *.egg-info
