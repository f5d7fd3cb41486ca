"""The plant calendar, loss reasons, downtime and OEE by shift, day and week."""
