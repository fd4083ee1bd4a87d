package cluster

import (
	"fmt"
	"slices"
	"testing"
)

func TestRendezvous(t *testing.T) {
	keys := make([]string, 1000)
	for i := range keys {
		keys[i] = fmt.Sprintf("sub_%026d", i*7919) // shaped like Herald's ids
	}
	for _, tc := range []struct {
		name  string
		nodes []string // the last one leaves, then comes back as a new id
	}{
		{"hosts sharing a prefix", []string{"web-1-2231-a1b2c3", "web-2-2231-a1b2c4", "web-3-2231-a1b2c5"}},
		{"one host, three processes", []string{"ip-10-0-0-7-901-0f00aa", "ip-10-0-0-7-902-13b7c1", "ip-10-0-0-7-903-ffe012"}},
		{"short ids", []string{"a", "b", "c"}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			owner := make(map[string]string, len(keys))
			count := map[string]int{}
			for _, k := range keys {
				o := Owner(tc.nodes, k)
				owner[k] = o
				count[o]++
			}
			// Even: each node within 20% of a third (a deviation of 4.5
			// standard deviations for a uniform hash).
			for _, n := range tc.nodes {
				if c := count[n]; c < 267 || c > 400 {
					t.Errorf("node %s owns %d of 1000 keys, want 333±20%%", n, c)
				}
			}
			// Any order of the same set gives the same owners.
			rev := slices.Clone(tc.nodes)
			slices.Reverse(rev)
			for _, k := range keys {
				if o := Owner(rev, k); o != owner[k] {
					t.Fatalf("owner of %s depends on order: %s vs %s", k, o, owner[k])
				}
			}

			// One node leaves: only its keys move, spread over the others.
			gone := tc.nodes[len(tc.nodes)-1]
			rest := tc.nodes[:len(tc.nodes)-1]
			moved := map[string]int{}
			for _, k := range keys {
				o := Owner(rest, k)
				switch {
				case owner[k] != gone && o != owner[k]:
					t.Fatalf("key %s moved from %s to %s though %s left", k, owner[k], o, gone)
				case owner[k] == gone:
					moved[o]++
				}
			}
			if n := moved[rest[0]] + moved[rest[1]]; n != count[gone] || n < 267 || n > 400 {
				t.Errorf("%d keys moved when a node left, want its %d, about a third", n, count[gone])
			}
			if moved[rest[0]] < count[gone]/4 || moved[rest[1]] < count[gone]/4 {
				t.Errorf("the leaving node's keys went unevenly: %v", moved)
			}

			// It restarts under a new id: it takes about a third, a little
			// from each, and nothing moves between the others.
			back := append(slices.Clone(rest), gone+"-restarted")
			took := 0
			for _, k := range keys {
				before, after := Owner(rest, k), Owner(back, k)
				switch {
				case after == gone+"-restarted":
					took++
				case after != before:
					t.Fatalf("key %s moved from %s to %s when a node joined", k, before, after)
				}
			}
			if took < 267 || took > 400 {
				t.Errorf("the rejoined node took %d keys, want about a third", took)
			}
		})
	}
	if o := Owner(nil, "sub_1"); o != "" {
		t.Errorf("owner among no nodes: %q", o)
	}
	if o := Owner([]string{"only"}, "sub_1"); o != "only" {
		t.Errorf("owner among one node: %q", o)
	}
}

func BenchmarkOwner(b *testing.B) {
	nodes := []string{"web-1-2231-a1b2c3", "web-2-2231-a1b2c4", "web-3-2231-a1b2c5"}
	for b.Loop() {
		Owner(nodes, "sub_01JBQ2W5Y6Z7X8V9T0R1S2P3Q4")
	}
}
