"""Transports that carry sealed envelopes: MQTT (embedded broker or Mosquitto)."""
