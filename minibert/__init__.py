"""minibert: BERT and its heads, built from common/."""
