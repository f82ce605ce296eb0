# One-command entry points. Every target creates .venv and installs the kit on first use.
VENV ?= .venv
PYTHON ?= python3
BIN := $(VENV)/bin

.PHONY: venv lab test bench figures clean-venv

$(BIN)/.installed: pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip
	$(BIN)/python -m pip install --quiet -e ".[test]"
	touch $@

venv: $(BIN)/.installed

## make lab: install (first time) and open JupyterLab on the notebooks
lab: venv
	$(BIN)/jupyter lab notebooks/

## make test: install (first time) and run every test, all notebooks included
test: venv
	$(BIN)/pytest --nbval-lax tests notebooks

## make bench: print the benchmark JSON lines
bench: venv
	$(BIN)/sgpn bench raster explorer

## make figures: regenerate figures/ headless
figures: venv
	$(BIN)/sgpn figures --out figures

clean-venv:
	rm -rf $(VENV)
