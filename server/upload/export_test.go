package upload

// Rehashes reports how many partial files finish read back to hash them.
func (h *Handler) Rehashes() int64 { return h.rehashes.Load() }
