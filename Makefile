# The two set-up commands of the README: `make demo` (run the main job) and `make test`.
# Both create .venv on first use; `make test` also installs what the tests need from Debian.

PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
PYNVML_MIN := 12.560.30

.PHONY: demo test lint unit setup system-deps exe bench proto clean

$(BIN)/hmonitor: pyproject.toml
	@# A fresh Debian/Ubuntu lacks python3-venv: install it (and the rest) when venv fails.
	$(PYTHON) -m venv $(VENV) || { rm -rf $(VENV) && bash tools/install-system-deps.sh && $(PYTHON) -m venv $(VENV); }
	$(BIN)/pip install --quiet --upgrade pip
	$(BIN)/pip install --quiet -e '.[test]'
	touch $@

# The oldest nvidia-ml-py we support, for the tests that run the agent against it too.
$(VENV)/pynvml-min/pynvml.py: | $(BIN)/hmonitor
	$(BIN)/pip install --quiet --no-deps --target $(VENV)/pynvml-min 'nvidia-ml-py==$(PYNVML_MIN)'

system-deps:
	bash tools/install-system-deps.sh

setup: system-deps $(BIN)/hmonitor $(VENV)/pynvml-min/pynvml.py

demo: $(BIN)/hmonitor
	$(BIN)/python -m hmonitor.demo

lint: $(BIN)/hmonitor
	$(BIN)/ruff check .
	$(BIN)/mypy

test: setup lint
	HMONITOR_PYNVML_MIN_DIR=$(CURDIR)/$(VENV)/pynvml-min $(BIN)/pytest $(PYTEST_ARGS)

exe: $(BIN)/hmonitor
	$(PYTHON) tools/build_exe.py

bench: $(BIN)/hmonitor
	$(BIN)/python bench/agent.py
	$(BIN)/python bench/dashboard.py
	$(BIN)/python bench/history.py

proto: $(BIN)/hmonitor
	$(BIN)/python tools/gen_proto.py

clean:
	rm -rf $(VENV) build dist artifacts .pytest_cache .mypy_cache .ruff_cache
