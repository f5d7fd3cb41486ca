"""Commands to machines: writable tags, sending setpoints and job data, the audit trail."""
