"""Training: labelled training sets, time-ordered splits, LightGBM, evaluation."""
