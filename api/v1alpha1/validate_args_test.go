package v1alpha1

import (
	"testing"
)

// component returns the component key names in c.
func component(c *Components, key string) *Component {
	switch key {
	case keyAPIServer:
		return &c.APIServer
	case keyControllerManager:
		return &c.ControllerManager
	case keyScheduler:
		return &c.Scheduler
	}
	panic("no component " + key)
}

// TestValidateRefusesWeakeningArgs plays an operator (or a pull request
// to the cluster file) that switches a secure default off through
// extraArgs: each weakening is refused at its field path, unless the
// component's allowInsecure names the flag.
func TestValidateRefusesWeakeningArgs(t *testing.T) {
	for _, tc := range []struct {
		name, component, flag, value string
		// managed: allowInsecure does not let it through either.
		managed bool
	}{
		{"AlwaysAllow authorization", keyAPIServer, "authorization-mode", "AlwaysAllow", false},
		{"AlwaysAllow among other modes", keyAPIServer, "authorization-mode", "Node,RBAC,AlwaysAllow", false},
		{"AlwaysAllow in another case and spacing", keyAPIServer, "authorization-mode", "Node, alwaysallow", false},
		{"anonymous requests", keyAPIServer, "anonymous-auth", "true", true},
		{"anonymous requests, as 1", keyAPIServer, "anonymous-auth", "1", true},
		{"apiserver profiling", keyAPIServer, "profiling", "true", false},
		{"controller-manager profiling", keyControllerManager, "profiling", "True", false},
		{"scheduler profiling", keyScheduler, "profiling", "1", false},
		{"controller-manager on every IPv4 address", keyControllerManager, "bind-address", "0.0.0.0", false},
		{"controller-manager on every IPv6 address", keyControllerManager, "bind-address", "::", false},
		{"controller-manager on every address, empty", keyControllerManager, "bind-address", "", false},
		{"scheduler on every address", keyScheduler, "bind-address", "0.0.0.0", false},
		{"scheduler on the node's address", keyScheduler, "bind-address", "10.0.0.11", false},
		{"apiserver TLS 1.0", keyAPIServer, "tls-min-version", "VersionTLS10", false},
		{"controller-manager TLS 1.1", keyControllerManager, "tls-min-version", "VersionTLS11", false},
		{"scheduler TLS 1.0", keyScheduler, "tls-min-version", "VersionTLS10", false},
		{"no audit log", keyAPIServer, "audit-log-path", "", false},
		{"audit log thrown away", keyAPIServer, "audit-log-path", "/dev/null", false},
		{"no audit policy", keyAPIServer, "audit-policy-file", "", false},
	} {
		t.Run(tc.name, func(t *testing.T) {
			path := "components." + tc.component + ".extraArgs." + tc.flag
			c := baseCluster()
			component(&c.Components, tc.component).ExtraArgs = map[string]string{tc.flag: tc.value}
			c.Default()
			_, err := Validate(c)
			text := "allowInsecure"
			if tc.managed {
				text = "is refused"
			}
			checkProblems(t, AsFieldErrors(err), []problem{{0, path, ReasonInvalid, text}})

			t.Run("named in allowInsecure", func(t *testing.T) {
				component(&c.Components, tc.component).AllowInsecure = []string{tc.flag}
				warnings, err := Validate(c)
				var want []problem
				if tc.managed {
					want = []problem{
						{0, path, ReasonInvalid, "is refused"},
						{0, "components." + tc.component + ".allowInsecure[0]", ReasonNotSupported, "cannot be allowed"},
					}
				}
				checkProblems(t, AsFieldErrors(err), want)
				checkProblems(t, warnings, nil)
			})
		})
	}
}

// TestValidateKeepsSafeArgs: the same flags with values that weaken
// nothing pass without allowInsecure.
func TestValidateKeepsSafeArgs(t *testing.T) {
	for _, tc := range []struct{ component, flag, value string }{
		{keyAPIServer, "authorization-mode", "Node,RBAC,Webhook"},
		{keyAPIServer, "profiling", "false"},
		{keyControllerManager, "bind-address", "127.0.0.1"},
		{keyScheduler, "bind-address", "::1"},
		{keyAPIServer, "bind-address", "0.0.0.0"}, // the apiserver serves the cluster
		{keyAPIServer, "tls-min-version", "VersionTLS13"},
		{keyScheduler, "tls-min-version", "VersionTLS12"},
		{keyAPIServer, "audit-log-path", "-"},
		{keyAPIServer, "audit-log-path", "/var/log/kubernetes/audit.log"},
		{keyAPIServer, "audit-policy-file", "/etc/anvil/audit-policy.yaml"},
	} {
		t.Run(tc.component+"/"+tc.flag+"="+tc.value, func(t *testing.T) {
			c := baseCluster()
			component(&c.Components, tc.component).ExtraArgs = map[string]string{tc.flag: tc.value}
			c.Default()
			warnings, err := Validate(c)
			checkProblems(t, AsFieldErrors(err), nil)
			checkProblems(t, warnings, nil)
		})
	}
}

// TestValidateAllowInsecureEntries: allowInsecure names only flags that
// can be allowed, each once, and says so when it allows nothing.
func TestValidateAllowInsecureEntries(t *testing.T) {
	for _, tc := range []struct {
		name          string
		component     string
		args          map[string]string
		allow         []string
		errs, warning []problem
	}{
		{name: "a flag that weakens nothing", component: keyAPIServer, allow: []string{"v"},
			errs: []problem{{0, "components.apiServer.allowInsecure[0]", ReasonNotSupported, `"v" is not a flag anvil refuses for apiServer: allowInsecure takes audit-log-path, audit-policy-file, authorization-mode, profiling, tls-min-version`}}},
		{name: "a flag refused for another component only", component: keyAPIServer, allow: []string{"bind-address"},
			errs: []problem{{0, "components.apiServer.allowInsecure[0]", ReasonNotSupported, "not a flag anvil refuses for apiServer"}}},
		{name: "a flag anvil manages", component: keyAPIServer, allow: []string{"anonymous-auth"},
			errs: []problem{{0, "components.apiServer.allowInsecure[0]", ReasonNotSupported, "cannot be allowed"}}},
		{name: "listed twice", component: keyScheduler, args: map[string]string{"profiling": "true"}, allow: []string{"profiling", "profiling"},
			errs: []problem{{0, "components.scheduler.allowInsecure[1]", ReasonDuplicate, "listed twice"}}},
		{name: "allows a flag not set", component: keyControllerManager, allow: []string{"profiling"},
			warning: []problem{{0, "components.controllerManager.allowInsecure[0]", ReasonInvalid, "allows nothing"}}},
		{name: "allows a safe value", component: keyControllerManager, args: map[string]string{"bind-address": "127.0.0.1"}, allow: []string{"bind-address"},
			warning: []problem{{0, "components.controllerManager.allowInsecure[0]", ReasonInvalid, "allows nothing"}}},
		{name: "allows one, not the other", component: keyAPIServer,
			args: map[string]string{"profiling": "true", "authorization-mode": "AlwaysAllow"}, allow: []string{"profiling"},
			errs: []problem{{0, "components.apiServer.extraArgs.authorization-mode", ReasonInvalid, `list "authorization-mode" in components.apiServer.allowInsecure`}}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			c := baseCluster()
			comp := component(&c.Components, tc.component)
			comp.ExtraArgs, comp.AllowInsecure = tc.args, tc.allow
			c.Default()
			warnings, err := Validate(c)
			checkProblems(t, AsFieldErrors(err), tc.errs)
			checkProblems(t, warnings, tc.warning)
		})
	}
}

// TestValidateWeakeningLines: a refused value points at its line in the
// file.
func TestValidateWeakeningLines(t *testing.T) {
	in := header + `hosts:
  - {name: m1, address: 10.0.0.11, role: master}
components:
  apiServer:
    extraArgs:
      v: "2"
      authorization-mode: AlwaysAllow
`
	_, _, err := load("cluster.yaml", []byte(in))
	checkProblems(t, AsFieldErrors(err), []problem{{10, "components.apiServer.extraArgs.authorization-mode", ReasonInvalid, "AlwaysAllow lets every authenticated client"}})
}
