# The README's commands. Every target installs what it needs first.
PYTHON ?= python3.11
# e.g. VENV_FLAGS=--system-site-packages to reuse a detectron2 you built yourself
VENV_FLAGS ?=
TORCH ?= torch==2.14.1 torchvision==0.29.1
VENV ?= .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.installed

.PHONY: install demo test bench mutation clean

install: $(STAMP)

$(STAMP): setup.py Makefile tools/install_detectron2.sh
	test -x $(PY) || $(PYTHON) -m venv $(VENV_FLAGS) $(VENV)
	$(PY) -m pip install -q --upgrade "pip>=23"
	$(PY) -c 'import torch, torchvision' 2>/dev/null || $(PY) -m pip install -q $(TORCH)
	bash tools/install_detectron2.sh $(PY)
	$(PY) -m pip install -q -e ".[dev]"
	touch $(STAMP)

test: install
	$(PY) -m pytest -q tests

demo: install
	$(PY) tools/demo.py $(DEMO_ARGS)

# The accuracy benchmark (docs/benchmark.md): source only / SADA / MIC / oracle on the
# three shifts, plus MIC in mixed precision (mic_amp) on the synthetic one, seeds 0,1,2,
# each shift's own schedule (synthetic and synthetic_dusk 800, cctv_fog 1000 iterations); many
# CPU hours, resumes where it stopped. Then the speed benchmark of the demo config.
# e.g. make bench BENCH_ARGS="--iters 200 --seeds 0 --output-dir output/bench_quick" (later options win)
BENCH_ARGS ?=
bench: install
	$(PY) tools/benchmark.py accuracy --shifts synthetic,synthetic_dusk,cctv_fog --methods source_only,sada,mic,mic_amp,oracle --seeds 0,1,2 --output-dir output/bench_accuracy $(BENCH_ARGS)
	$(PY) tools/benchmark.py speed --config configs/demo_mic.yaml --iters 20 --out output/bench_speed_demo.json

# Mutation testing of the modules that carry the method (docs/mutation_testing.md): about an
# hour on 2 cores from scratch, minutes when only a few functions changed (mutmut keeps its
# results in mutants/; delete that folder for a full rerun). Not part of `make test`.
MUTATION_JOBS ?= 2
mutation: install
	$(PY) -m pip install -q "mutmut==3.8.1"
	OMP_NUM_THREADS=1 $(VENV)/bin/mutmut run --max-children $(MUTATION_JOBS) > mutants.log 2>&1 || (tail -c 3000 mutants.log; false)
	$(PY) tools/mutation_report.py

clean:
	rm -rf $(VENV) output mutants mutants.log
