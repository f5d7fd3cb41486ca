"""Simulated machines and devices that publish to the broker (OPC-UA, Modbus, MQTT-native, load generator)."""
