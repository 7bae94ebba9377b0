package syncengine

import "slices"

// The walks below visit changes from the highest index down. Indexes are
// a topological order (a change's dependencies have smaller indexes), so
// when a change is popped every change that depends on it and that the
// walk reaches has been popped already: its marks are final. That lets a
// walk stop as soon as nothing left in its frontier can matter, instead of
// traversing the whole history as the core does.

// begin starts a walk: a new epoch for the marks, room for n indexes.
func (d *Doc) begin(n int) {
	if len(d.seen) < n {
		grow := max(n, 2*len(d.seen))
		d.seen = append(d.seen, make([]uint32, grow-len(d.seen))...)
		d.xmark = append(d.xmark, make([]uint32, grow-len(d.xmark))...)
	}
	d.epoch++
	if d.epoch == 0 { // wrapped: clear the marks of old walks
		clear(d.seen)
		clear(d.xmark)
		d.epoch = 1
	}
	d.heap = d.heap[:0]
}

func (d *Doc) push(i int32) {
	d.seen[i] = d.epoch
	h := append(d.heap, i)
	for j := len(h) - 1; j > 0; {
		p := (j - 1) / 2
		if h[p] >= h[j] {
			break
		}
		h[p], h[j] = h[j], h[p]
		j = p
	}
	d.heap = h
}

func (d *Doc) pop() int32 {
	h := d.heap
	top := h[0]
	n := len(h) - 1
	h[0] = h[n]
	h = h[:n]
	for j := 0; ; {
		l, r, m := 2*j+1, 2*j+2, j
		if l < n && h[l] > h[m] {
			m = l
		}
		if r < n && h[r] > h[m] {
			m = r
		}
		if m == j {
			break
		}
		h[m], h[j] = h[j], h[m]
		j = m
	}
	d.heap = h
	return top
}

func (d *Doc) depsOf(i int32, st *staging) []int32 {
	if int(i) < len(d.nodes) {
		return d.nodes[i].deps
	}
	return st.ready[int(i)-len(d.nodes)].deps
}

// reaches reports whether target is an ancestor of (or among) roots, in
// the graph of applied plus staged changes. It visits only changes with
// indexes between target's and the roots'.
func (d *Doc) reaches(roots []int32, target int32, st *staging) bool {
	n := len(d.nodes)
	if st != nil {
		n += len(st.ready)
	}
	d.begin(n)
	for _, r := range roots {
		if r >= target && d.seen[r] != d.epoch {
			d.push(r)
		}
	}
	for len(d.heap) > 0 {
		i := d.pop()
		if i == target {
			return true
		}
		for _, dep := range d.depsOf(i, st) {
			if dep >= target && d.seen[dep] != d.epoch {
				d.push(dep)
			}
		}
	}
	return false
}

// changesSince returns, in increasing order, the indexes of the applied
// changes that are not ancestors of (or among) have: what a peer whose
// heads are have lacks. Hashes in have that are not applied are ignored,
// as the core ignores them.
func (d *Doc) changesSince(have []Hash) []int32 {
	d.begin(len(d.nodes))
	open := 0 // nodes in the heap not known to be ancestors of have
	for _, h := range have {
		if i, ok := d.index[h]; ok && d.xmark[i] != d.epoch {
			d.xmark[i] = d.epoch
			if d.seen[i] != d.epoch {
				d.push(i)
			}
		}
	}
	for _, h := range d.heads {
		i := d.index[h]
		if d.seen[i] != d.epoch {
			d.push(i)
			open++
		}
	}
	var out []int32
	for open > 0 {
		i := d.pop()
		shared := d.xmark[i] == d.epoch
		if !shared {
			out = append(out, i)
			open--
		}
		for _, dep := range d.nodes[i].deps {
			switch {
			case d.seen[dep] != d.epoch:
				d.push(dep)
				if shared {
					d.xmark[dep] = d.epoch
				} else {
					open++
				}
			case shared && d.xmark[dep] != d.epoch:
				// In the heap as unshared so far: it is an ancestor of have.
				d.xmark[dep] = d.epoch
				open--
			}
		}
	}
	for l, r := 0, len(out)-1; l < r; l, r = l+1, r-1 {
		out[l], out[r] = out[r], out[l]
	}
	return out
}

// removeAncestors deletes from set every hash that is an ancestor of (or
// among) heads. Unknown heads are ignored.
func (d *Doc) removeAncestors(heads []Hash, set map[Hash]struct{}) {
	if len(set) == 0 {
		return
	}
	low := int32(len(d.nodes))
	for h := range set {
		if i, ok := d.index[h]; ok && i < low {
			low = i
		}
	}
	d.begin(len(d.nodes))
	for _, h := range heads {
		if i, ok := d.index[h]; ok && i >= low && d.seen[i] != d.epoch {
			d.push(i)
		}
	}
	for len(d.heap) > 0 && len(set) > 0 {
		i := d.pop()
		delete(set, d.nodes[i].hash)
		for _, dep := range d.nodes[i].deps {
			if dep >= low && d.seen[dep] != d.epoch {
				d.push(dep)
			}
		}
	}
}

// ancestorsOf returns which of the changes in among are ancestors of (or
// among) heads. Unknown heads are ignored. It visits only changes with
// indexes above the lowest of among.
func (d *Doc) ancestorsOf(heads []Hash, among []int32) map[int32]bool {
	if len(among) == 0 || len(heads) == 0 {
		return nil
	}
	low := slices.Min(among)
	want := make(map[int32]bool, len(among))
	for _, i := range among {
		want[i] = true
	}
	var out map[int32]bool
	d.begin(len(d.nodes))
	for _, h := range heads {
		if i, ok := d.index[h]; ok && i >= low && d.seen[i] != d.epoch {
			d.push(i)
		}
	}
	for len(d.heap) > 0 && len(out) < len(want) {
		i := d.pop()
		if want[i] {
			if out == nil {
				out = make(map[int32]bool)
			}
			out[i] = true
		}
		for _, dep := range d.nodes[i].deps {
			if dep >= low && d.seen[dep] != d.epoch {
				d.push(dep)
			}
		}
	}
	return out
}
