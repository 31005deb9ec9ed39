"""The Lambda functions: each subpackage is one function's handler and what only it needs."""
