package embedded

// WriteBuffered makes p write its packs through the page cache, as it does
// where O_DIRECT is refused.
func WriteBuffered(p *Pool) { p.chunks.noDirect.Store(true) }
