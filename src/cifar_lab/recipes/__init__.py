"""The airbench tricks, usable with any model: Lightning callbacks (whitening init and bias
freeze, device warm-up, layer freezing, Lookahead) and plain functions (TTA, the Muon optimizer)."""
