"""The pilots' applications, built on the platform."""
