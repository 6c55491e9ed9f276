package config

import (
	"github.com/rs/zerolog"
)

// redacted replaces a secret's value in logs.
const redacted = "[redacted]"

// MarshalZerologObject logs the configuration of the command it was loaded
// for (every key when loaded with Decode or built by Default), one field
// per key. Secrets (key passphrase, NATS password and token) show as
// "[redacted]" when set, and passwords inside URLs are hidden, so
// `log.Debug().Object("config", cfg)` is safe.
func (c Config) MarshalZerologObject(e *zerolog.Event) {
	if c.File != "" {
		e.Str("file", c.File)
	}
	for _, k := range keys {
		if c.only != 0 && k.cmds&c.only == 0 {
			continue
		}
		v := k.format(&c)
		switch {
		case k.secret && v != "":
			v = redacted
		case k.name == "nats.url":
			list := splitList(v)
			for i, u := range list {
				list[i] = redactURL(u)
			}
			e.Strs(k.name, list)
			continue
		case k.name == "fluentd.url" || k.name == "fluentd.session-url":
			v = redactURL(v)
		}
		e.Str(k.name, v)
	}
}
