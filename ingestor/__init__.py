"""The MQTT ingestor: telemetry from the broker into the database, acknowledged only once committed."""
