"""Transfer from earlier tasks: meta-surrogates trained on task tables (:mod:`.meta`) and
dataset-aware ones that read the target's images (:mod:`.dataset_encoding`)."""
