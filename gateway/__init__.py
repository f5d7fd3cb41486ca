"""The edge gateway: polls or subscribes to PLCs, buffers on disk, publishes the MQTT contract."""
