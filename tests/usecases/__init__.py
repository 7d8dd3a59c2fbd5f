"""Use cases that live only in the test suite: each one is a spec, feature declarations and
data, run end to end through the unchanged platform."""
