"""Models: the backbone registry, preprocessing, heads, the `TransferModel` contract, the
pretrained templates (keras.applications, keras-hub, TF-Hub, word vectors), text classifiers
and encoders.

Imports only from `templates.data`.
"""
