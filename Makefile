# Set-up and tasks. `make demo` and `make test` each install what they need into .venv first.
PYTHON ?= python3
VENV ?= .venv
PY := $(VENV)/bin/python

.PHONY: demo test lint bench docs tutorial

$(VENV)/.installed: pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(PY) -m pip install -q --upgrade pip
	# the CPU build of torch first, where this machine has it (an unpinned torch pulls a multi-GB CUDA build)
	$(PY) -m pip install -q torch==2.13.0 || echo "torch 2.13.0 not available here; pip will choose a torch"
	$(PY) -m pip install -q -e . --group test --group dev --group bench
	touch $@

demo: $(VENV)/.installed  ## embed, cluster and explain pbmc68k_reduced; figures in ./den-demo
	$(VENV)/bin/den demo --out den-demo

test: $(VENV)/.installed  ## the test suite (slow benchmarks-as-tests are skipped)
	MPLBACKEND=agg $(PY) -m pytest

lint: $(VENV)/.installed
	$(VENV)/bin/ruff check . && $(VENV)/bin/ruff format --check .

docs: $(VENV)/.installed  ## the HTML docs (sphinx, the doc dependency group) in docs/_build/html
	$(PY) -m pip install -q --group doc
	$(PY) -m sphinx -q -b html docs docs/_build/html

tutorial: $(VENV)/.installed  ## re-run tutorials/*.ipynb in place, so their stored outputs match the code
	cd tutorials && for nb in *.ipynb; do MPLBACKEND=module://matplotlib_inline.backend_inline ../$(PY) -c "import nbformat; \
	from nbclient import NotebookClient; nb = nbformat.read('$$nb', 4); \
	NotebookClient(nb, timeout=900, kernel_name='python3').execute(); nbformat.write(nb, '$$nb')" || exit 1; done

bench: $(VENV)/.installed  ## the panel (suite.py) and every other benchmark script; results in benchmarks/results/
	mkdir -p benchmarks/results
	for b in suite embed_speed cluster_quality marker_quality images mapping scale knn ddp; do \
		MPLBACKEND=agg $(PY) benchmarks/$$b.py | tee benchmarks/results/$$b.txt; done
