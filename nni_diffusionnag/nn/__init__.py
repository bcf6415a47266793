"""Networks: the score network of the prior and the property surrogates (no NNI)."""
