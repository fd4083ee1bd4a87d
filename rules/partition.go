package rules

import (
	"hash/fnv"
	"strconv"
	"strings"
)

// MaxPartitions bounds a rule's partitions.
const MaxPartitions = 64

// A rule with partitions > 1 runs as that many subscriptions of its
// input: partition 0 is the rule's own subscription (rule_<name>), the
// others rule_<name>~<i>. Each owns the keys whose hash falls in it, with
// their state (owner rule:<name> and rule:<name>~<i>), under its own
// lease, so the nodes of a cluster share the rule and each key's state
// lives in one partition. '~' is no part of a name (ValidateName), so the
// ids never collide.
const partitionSep = "~"

// PartitionID is the subscription id of partition i of the rule.
func PartitionID(name string, i int) string {
	if i == 0 {
		return RulePrefix + name
	}
	return RulePrefix + name + partitionSep + strconv.Itoa(i)
}

// PartitionOwner is the StateStore owner of partition i of the rule.
func PartitionOwner(name string, i int) string {
	if i == 0 {
		return Owner(ChannelRule, name)
	}
	return Owner(ChannelRule, name) + partitionSep + strconv.Itoa(i)
}

// IsPartition reports whether the subscription id is a rule's partition
// other than 0: one that the rule's own subscription stands for.
func IsPartition(subID string) bool {
	return strings.HasPrefix(subID, RulePrefix) && strings.Contains(subID, partitionSep)
}

// splitPartition returns the rule's name and the partition index of a
// rule subscription's id.
func splitPartition(subID string) (string, int) {
	name, idx, ok := strings.Cut(ruleName(subID), partitionSep)
	if !ok {
		return name, 0
	}
	i, err := strconv.Atoi(idx)
	if err != nil || i < 0 {
		return name, 0
	}
	return name, i
}

// partitionOf is the partition of a key among n: FNV-1a of the key,
// modulo n. It never changes for a key, so its state stays in one
// partition.
func partitionOf(key string, n int) int {
	h := fnv.New64a()
	_, _ = h.Write([]byte(key))
	return int(h.Sum64() % uint64(n))
}

// Partitions is how many partitions the rule runs in (at least 1).
func (p *Program) Partitions() int { return max(1, p.spec.Partitions) }
