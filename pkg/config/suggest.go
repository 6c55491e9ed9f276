package config

import (
	"sort"
	"strings"
)

// suggest is the known TOML key closest to an unknown one, "" when none is
// close enough to be a likely typo.
func suggest(unknown string) string {
	names := make([]string, 0, len(byTOMLName))
	for n := range byTOMLName {
		names = append(names, n)
	}
	sort.Strings(names)
	best, bestD := "", 1<<30
	for _, n := range names {
		if d := editDistance(unknown, n); d < bestD {
			best, bestD = n, d
		}
	}
	limit := 2
	if len(unknown) >= 12 {
		limit = 3
	}
	if bestD > limit {
		return ""
	}
	return best
}

// editDistance is the optimal string alignment distance: insertions,
// deletions, substitutions and swaps of neighbours each cost one.
func editDistance(a, b string) int {
	ra, rb := []rune(a), []rune(b)
	d := make([][]int, len(ra)+1)
	for i := range d {
		d[i] = make([]int, len(rb)+1)
		d[i][0] = i
	}
	for j := range d[0] {
		d[0][j] = j
	}
	for i := 1; i <= len(ra); i++ {
		for j := 1; j <= len(rb); j++ {
			cost := 1
			if ra[i-1] == rb[j-1] {
				cost = 0
			}
			d[i][j] = min(d[i-1][j]+1, d[i][j-1]+1, d[i-1][j-1]+cost)
			if i > 1 && j > 1 && ra[i-1] == rb[j-2] && ra[i-2] == rb[j-1] {
				d[i][j] = min(d[i][j], d[i-2][j-2]+1)
			}
		}
	}
	return d[len(ra)][len(rb)]
}

// misplaced is the top-level key an unknown "section.key" ends with: a
// top-level key written after a [section] header lands in that section.
func misplaced(unknown string) string {
	i := strings.LastIndex(unknown, ".")
	if i < 0 {
		return ""
	}
	if k := byTOMLName[unknown[i+1:]]; k != nil {
		return unknown[i+1:]
	}
	return ""
}
