package config

import (
	"fmt"
	"math"
	"strconv"
	"strings"
	"time"

	"github.com/pelletier/go-toml/v2"
	"github.com/urfave/cli/v2"
)

// setFromTOML stores a value decoded from the TOML file into the key's field.
func (k *key) setFromTOML(c *Config, raw any) error {
	switch p := k.field(c).(type) {
	case *string:
		s, ok := raw.(string)
		if !ok {
			return fmt.Errorf("must be a string, got %s", describe(raw))
		}
		*p = s
	case *[]string:
		list, err := stringList(raw)
		if err != nil {
			return err
		}
		*p = list
	case *int, *int64, *int32:
		n, ok := raw.(int64)
		if !ok {
			return fmt.Errorf("must be an integer, got %s", describe(raw))
		}
		return setInt(p, n)
	case *bool:
		b, ok := raw.(bool)
		if !ok {
			return fmt.Errorf("must be true or false, got %s", describe(raw))
		}
		*p = b
	case *time.Duration:
		s, ok := raw.(string)
		if !ok {
			return fmt.Errorf("must be a duration string such as \"5s\" or \"1h30m\", got %s", describe(raw))
		}
		return setDuration(p, s)
	case *MemoryBudget:
		switch v := raw.(type) {
		case string:
			return setMemoryBudget(p, v)
		case int64:
			return setMemoryBudget(p, strconv.FormatInt(v, 10))
		}
		return fmt.Errorf("must be \"auto\", \"off\" or a size such as \"384MiB\", got %s", describe(raw))
	case *time.Time:
		switch v := raw.(type) {
		case time.Time:
			*p = v.UTC()
		case string:
			return setTime(p, v)
		case toml.LocalDateTime, toml.LocalDate:
			return fmt.Errorf("must be an RFC 3339 time with a time zone, such as 2024-01-02T15:04:05Z, got %v", v)
		default:
			return fmt.Errorf("must be an RFC 3339 time, got %s", describe(raw))
		}
	}
	return nil
}

// setFromString stores a value given as text (an environment variable).
func (k *key) setFromString(c *Config, s string) error {
	switch p := k.field(c).(type) {
	case *string:
		*p = s
	case *[]string:
		*p = splitList(s)
	case *int, *int64, *int32:
		n, err := strconv.ParseInt(strings.TrimSpace(s), 10, 64)
		if err != nil {
			return fmt.Errorf("must be an integer, got %q", s)
		}
		return setInt(p, n)
	case *bool:
		b, err := strconv.ParseBool(strings.TrimSpace(s))
		if err != nil {
			return fmt.Errorf("must be true or false, got %q", s)
		}
		*p = b
	case *time.Duration:
		return setDuration(p, s)
	case *time.Time:
		return setTime(p, s)
	case *MemoryBudget:
		return setMemoryBudget(p, s)
	}
	return nil
}

// setFromFlag stores the flag's parsed value.
func (k *key) setFromFlag(c *Config, ctx *cli.Context) error {
	switch p := k.field(c).(type) {
	case *string:
		*p = ctx.String(k.flag)
	case *[]string:
		var out []string
		for _, s := range ctx.StringSlice(k.flag) {
			out = append(out, splitList(s)...)
		}
		*p = out
	case *int:
		*p = ctx.Int(k.flag)
	case *int64:
		*p = ctx.Int64(k.flag)
	case *int32:
		return setInt(p, ctx.Int64(k.flag))
	case *bool:
		*p = ctx.Bool(k.flag)
	case *time.Duration:
		*p = ctx.Duration(k.flag)
	case *time.Time:
		return setTime(p, ctx.String(k.flag))
	case *MemoryBudget:
		return setMemoryBudget(p, ctx.String(k.flag))
	}
	return nil
}

func setInt(p any, n int64) error {
	switch p := p.(type) {
	case *int:
		*p = int(n)
	case *int64:
		*p = n
	case *int32:
		if n < math.MinInt32 || n > math.MaxInt32 {
			return fmt.Errorf("must fit in 32 bits, got %d", n)
		}
		*p = int32(n)
	}
	return nil
}

func setDuration(p *time.Duration, s string) error {
	d, err := time.ParseDuration(strings.TrimSpace(s))
	if err != nil {
		return fmt.Errorf("must be a duration such as \"5s\" or \"1h30m\", got %q", s)
	}
	*p = d
	return nil
}

func setMemoryBudget(p *MemoryBudget, s string) error {
	b, err := ParseMemoryBudget(s)
	if err != nil {
		return err
	}
	*p = b
	return nil
}

func setTime(p *time.Time, s string) error {
	s = strings.TrimSpace(s)
	if s == "" {
		*p = time.Time{}
		return nil
	}
	t, err := time.Parse(time.RFC3339Nano, s)
	if err != nil {
		return fmt.Errorf("must be an RFC 3339 time such as 2024-01-02T15:04:05Z, got %q", s)
	}
	*p = t.UTC()
	return nil
}

// stringList accepts a TOML array of strings or one comma-separated string,
// as teleport-event-handler's files have both.
func stringList(raw any) ([]string, error) {
	switch v := raw.(type) {
	case string:
		return splitList(v), nil
	case []any:
		out := make([]string, 0, len(v))
		for i, e := range v {
			s, ok := e.(string)
			if !ok {
				return nil, fmt.Errorf("element %d must be a string, got %s", i+1, describe(e))
			}
			out = append(out, splitList(s)...)
		}
		return out, nil
	}
	return nil, fmt.Errorf("must be a list of strings or a comma-separated string, got %s", describe(raw))
}

// splitList splits on commas and drops blanks: "" is the empty list.
func splitList(s string) []string {
	var out []string
	for _, part := range strings.Split(s, ",") {
		if part = strings.TrimSpace(part); part != "" {
			out = append(out, part)
		}
	}
	return out
}

// describe names a decoded TOML value's type and value for messages.
func describe(v any) string {
	switch v := v.(type) {
	case string:
		return fmt.Sprintf("string %q", v)
	case int64:
		return fmt.Sprintf("integer %d", v)
	case float64:
		return fmt.Sprintf("number %v", v)
	case bool:
		return fmt.Sprintf("boolean %v", v)
	case []any:
		return "an array"
	case map[string]any:
		return "a table"
	case time.Time, toml.LocalDateTime, toml.LocalDate, toml.LocalTime:
		return fmt.Sprintf("date-time %v", v)
	}
	return fmt.Sprintf("%T", v)
}

// format renders the key's value in c for the reference and the log.
func (k *key) format(c *Config) string {
	switch p := k.field(c).(type) {
	case *string:
		return *p
	case *[]string:
		return strings.Join(*p, ",")
	case *int:
		return strconv.Itoa(*p)
	case *int64:
		return strconv.FormatInt(*p, 10)
	case *int32:
		return strconv.FormatInt(int64(*p), 10)
	case *bool:
		return strconv.FormatBool(*p)
	case *time.Duration:
		return p.String()
	case *time.Time:
		if p.IsZero() {
			return ""
		}
		return p.Format(time.RFC3339Nano)
	case *MemoryBudget:
		return p.String()
	}
	return ""
}
