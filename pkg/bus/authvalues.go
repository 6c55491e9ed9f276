package bus

import "github.com/nats-io/nats-server/v2/server"

// AuthorizationValues is the authorization block of a nats-server
// configuration, as data: each user of users, by its public NKey, with the
// permissions of its role (Permissions). Encoded as JSON or YAML it is what
// the official NATS Helm chart takes under config.merge.authorization, and
// what nats-server reads as `authorization { users = [...] }`, so the
// cluster enforces the roles the embedded server does. A user of an unknown
// role is left out (LoadUsers refuses such a file before it gets here).
func AuthorizationValues(users []User, n AuthNames) map[string]any {
	list := make([]any, 0, len(users))
	for _, u := range users {
		p := Permissions(u.Role, n)
		if p == nil {
			continue
		}
		list = append(list, map[string]any{
			"nkey":        u.NKey,
			"permissions": permissionValues(p),
		})
	}
	return map[string]any{"users": list}
}

// permissionValues is p in nats-server's configuration layout.
func permissionValues(p *server.Permissions) map[string]any {
	pub := map[string]any{"allow": p.Publish.Allow}
	if len(p.Publish.Deny) > 0 {
		pub["deny"] = p.Publish.Deny
	}
	return map[string]any{
		"publish":   pub,
		"subscribe": map[string]any{"allow": p.Subscribe.Allow},
	}
}
