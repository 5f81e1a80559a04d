"""The ReciNet network: embeddings, local conv, reciprocal block, backbone, heads."""
