"""The persister Lambda: writes journal messages from events.fifo to PostgreSQL."""
