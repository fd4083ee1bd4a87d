package api

import (
	"sync"
	"time"

	"github.com/heraldhq/herald/rules"
)

// viewDefTTL is how long a read trusts a view's definition it keeps in
// memory: a view changed or deleted through another node applies to this
// node's reads within it (through this node, at once).
const viewDefTTL = time.Second

// maxViewDefs bounds the definitions kept; past it the cache starts over.
const maxViewDefs = 10000

// viewDef is a view's checked definition and input, as a read needs them.
type viewDef struct {
	prog  *rules.ViewProgram
	topic string
	at    time.Time
}

// viewDefs keeps views' definitions by name, so a read costs one store
// query (the row), not two and a parse: the subscription read was a
// quarter of a read's server CPU (docs/benchmarks.md).
type viewDefs struct {
	mu   sync.Mutex
	defs map[string]viewDef
}

func (c *viewDefs) get(name string, now time.Time) (viewDef, bool) {
	c.mu.Lock()
	defer c.mu.Unlock()
	d, ok := c.defs[name]
	if !ok || now.Sub(d.at) >= viewDefTTL || now.Before(d.at) {
		return viewDef{}, false
	}
	return d, true
}

func (c *viewDefs) put(name string, d viewDef) {
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.defs == nil || len(c.defs) >= maxViewDefs {
		c.defs = map[string]viewDef{}
	}
	c.defs[name] = d
}

// forget drops a view changed or deleted through this node.
func (c *viewDefs) forget(name string) {
	c.mu.Lock()
	defer c.mu.Unlock()
	delete(c.defs, name)
}
