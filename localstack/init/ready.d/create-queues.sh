#!/bin/bash
# LocalStack ready hook (docker-compose.yml mounts it): create the Cloudex queues with the same
# script host mode uses, run by the image's own Python, which has boto3.
set -euo pipefail
PYTHONPATH=/opt/cloudex exec /opt/code/localstack/.venv/bin/python \
  /opt/cloudex/localstack/create_queues.py
