package fluentdsim

import (
	"fmt"
	"regexp"
	"strings"
)

// tagMatcher holds the patterns of the <match> sections. A nil matcher
// matches every tag.
type tagMatcher []*regexp.Regexp

// compileMatch turns Fluentd match patterns into regular expressions:
// `*` matches one tag part, `**` zero or more parts ("a.**" also matches
// "a"), `{x,y}` either alternative. A pattern may list several patterns
// separated by spaces, as `<match a.** b.*>` does.
func compileMatch(patterns []string) (tagMatcher, error) {
	var m tagMatcher
	for _, p := range patterns {
		for _, one := range strings.Fields(p) {
			re, err := regexp.Compile("^" + globToRegexp(one) + "$")
			if err != nil {
				return nil, fmt.Errorf("match pattern %q: %w", one, err)
			}
			m = append(m, re)
		}
	}
	return m, nil
}

func globToRegexp(p string) string {
	var b strings.Builder
	for i := 0; i < len(p); {
		switch {
		case strings.HasPrefix(p[i:], ".**"):
			b.WriteString(`(?:\..*)?`)
			i += 3
		case strings.HasPrefix(p[i:], "**."):
			b.WriteString(`(?:.*\.)?`)
			i += 3
		case strings.HasPrefix(p[i:], "**"):
			b.WriteString(`.*`)
			i += 2
		case p[i] == '*':
			b.WriteString(`[^.]*`)
			i++
		case p[i] == '{':
			end := strings.IndexByte(p[i:], '}')
			if end < 0 {
				b.WriteString(regexp.QuoteMeta(p[i:]))
				i = len(p)
				continue
			}
			alts := strings.Split(p[i+1:i+end], ",")
			for j, a := range alts {
				alts[j] = globToRegexp(a)
			}
			b.WriteString("(?:" + strings.Join(alts, "|") + ")")
			i += end + 1
		default:
			b.WriteString(regexp.QuoteMeta(p[i : i+1]))
			i++
		}
	}
	return b.String()
}

// matches reports whether some <match> section takes the tag.
func (m tagMatcher) matches(tag string) bool {
	if len(m) == 0 {
		return true
	}
	for _, re := range m {
		if re.MatchString(tag) {
			return true
		}
	}
	return false
}
