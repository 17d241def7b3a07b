# Each target creates .venv on first use and installs the project into it.
PYTHON ?= python3
VENV ?= .venv
BIN := $(VENV)/bin
export DAGSTER_HOME ?= $(CURDIR)/.dagster_home
SIZES ?= 1000 10000 52000 500000
REPEATS ?= 3
PYTEST_ARGS ?=

.PHONY: demo test ui mlflow bench quality home clean

$(BIN)/.installed: pyproject.toml Makefile
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --quiet --upgrade pip
	$(BIN)/pip install --quiet -e '.[dev,torch,docker,k8s,evo2]'
	touch $@

home:
	mkdir -p $(DAGSTER_HOME)
	test -e $(DAGSTER_HOME)/dagster.yaml || ln -s $(CURDIR)/dagster.yaml $(DAGSTER_HOME)/dagster.yaml

demo: $(BIN)/.installed home
	$(BIN)/codon-assets materialize

test: $(BIN)/.installed
	$(BIN)/pytest $(PYTEST_ARGS)

ui: $(BIN)/.installed home
	$(BIN)/dagster dev -w workspace.yaml -h 127.0.0.1 -p 3000

mlflow: $(BIN)/.installed home
	mkdir -p $(DAGSTER_HOME)/mlflow
	$(BIN)/mlflow ui --backend-store-uri sqlite:///$(DAGSTER_HOME)/mlflow/mlflow.db --host 127.0.0.1 --port 5000

quality: $(BIN)/.installed
	$(BIN)/python bench/yeast_quality.py --mlflow-uri sqlite:///$(DAGSTER_HOME)/mlflow/mlflow.db

bench: $(BIN)/.installed
	$(BIN)/python bench/run.py --sizes $(SIZES) --repeats $(REPEATS)

clean:
	rm -rf $(VENV) build *.egg-info
