"""Learning: text encoder, item table, the CTR model, lineages and training cycles."""
