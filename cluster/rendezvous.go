package cluster

// Owner returns the node of nodes that owns key under rendezvous (highest
// random weight) hashing, or "" when nodes is empty. Every node computes
// the same owner from the same set of ids, in any order. When a node
// leaves, only the keys it owned move, spread evenly over the others; when
// one joins, it takes about 1/n of the keys, a little from each. Ties
// (practically impossible) go to the smaller id.
func Owner(nodes []string, key string) string {
	best, bestW := "", uint64(0)
	for _, n := range nodes {
		w := weight(n, key)
		if best == "" || w > bestW || w == bestW && n < best {
			best, bestW = n, w
		}
	}
	return best
}

// weight is the node's score for the key: FNV-1a over node, a NUL (which
// neither holds) and key, then the SplitMix64 finalizer, so ids that share
// long prefixes (host names) still get independent, uniform weights.
func weight(node, key string) uint64 {
	const (
		offset = 14695981039346656037
		prime  = 1099511628211
	)
	h := uint64(offset)
	for i := 0; i < len(node); i++ {
		h = (h ^ uint64(node[i])) * prime
	}
	h *= prime // the NUL separator: h ^ 0 == h
	for i := 0; i < len(key); i++ {
		h = (h ^ uint64(key[i])) * prime
	}
	h ^= h >> 30
	h *= 0xbf58476d1ce4e5b9
	h ^= h >> 27
	h *= 0x94d049bb133111eb
	h ^= h >> 31
	return h
}
