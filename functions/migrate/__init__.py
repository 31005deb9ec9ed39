"""The schema migration runner and its Lambda handler."""
