"""Monitoring: whylogs profiles of served model inputs and predictions, drift against the
training reference of the model version that served them."""
