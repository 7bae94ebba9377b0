package hub

// refreshMaxBytes asks Options.DocMaxBytes for the document's size bound
// (a quota of its owners or of the document itself) and applies it to the
// engine: the next sync message that would take the document past it is
// refused (an error naming the bound, close protocol.CloseLimitExceeded),
// nothing of it stored or relayed.
func (d *document) refreshMaxBytes() {
	f := d.h.opts.DocMaxBytes
	if f == nil || d.eng == nil {
		return
	}
	ctx, cancel := d.storeCtx()
	n, err := f(ctx, d.id)
	cancel()
	switch {
	case err != nil:
		d.log.Warn("failed to read the document's size quota; keeping its bound", "bound", d.eng.MaxBytes(), "err", err)
		return
	case n == 0:
		n = max(d.h.opts.MaxDocBytes, 0)
	case n < 0:
		n = 0 // no bound
	}
	d.eng.SetMaxBytes(n)
}
