// Command health reads LineWorksNotifier objects (JSON, one per line on stdin) and prints, for
// each, how the GitOps tools read its health: kstatus (sigs.k8s.io/cli-utils, which Flux's
// `wait: true` and Kustomize use), Argo CD's Lua health check (run with gopher-lua and
// gopher-json, the interpreter and object conversion Argo CD uses), and Flux's healthCheckExprs
// (CEL, with the object's top-level fields as variables and optional types, as Flux evaluates
// them). The Lua script and the three CEL expressions are given as files, so the test checks the
// very text docs/gitops.md shows.
//
//	health -lua health.lua -cel-current current.cel -cel-in-progress in-progress.cel -cel-failed failed.cel
package main

import (
	"bufio"
	"encoding/json"
	"flag"
	"fmt"
	"os"

	"github.com/google/cel-go/cel"
	lua "github.com/yuin/gopher-lua"
	"k8s.io/apimachinery/pkg/apis/meta/v1/unstructured"
	utiljson "k8s.io/apimachinery/pkg/util/json"
	luajson "layeh.com/gopher-json"
	"sigs.k8s.io/cli-utils/pkg/kstatus/status"
)

type verdict struct {
	Kstatus        string `json:"kstatus"`
	KstatusMessage string `json:"kstatusMessage"`
	Argo           string `json:"argo"`
	ArgoMessage    string `json:"argoMessage"`
	Flux           string `json:"flux"`
}

func main() {
	luaFile := flag.String("lua", "", "Argo CD health check script")
	current := flag.String("cel-current", "", "Flux healthCheckExprs current")
	inProgress := flag.String("cel-in-progress", "", "Flux healthCheckExprs inProgress")
	failed := flag.String("cel-failed", "", "Flux healthCheckExprs failed")
	flag.Parse()
	script := read(*luaFile)
	exprs := []struct{ name, text string }{
		{"Failed", read(*failed)},
		{"Current", read(*current)},
		{"InProgress", read(*inProgress)},
	}
	env, err := cel.NewEnv(
		cel.OptionalTypes(),
		cel.Variable("apiVersion", cel.DynType),
		cel.Variable("kind", cel.DynType),
		cel.Variable("metadata", cel.DynType),
		cel.Variable("spec", cel.DynType),
		cel.Variable("status", cel.DynType),
	)
	check(err)
	programs := make([]cel.Program, len(exprs))
	for i, e := range exprs {
		ast, issues := env.Compile(e.text)
		if issues != nil && issues.Err() != nil {
			fail("CEL %s: %v", e.name, issues.Err())
		}
		programs[i], err = env.Program(ast)
		check(err)
	}
	in := bufio.NewScanner(os.Stdin)
	in.Buffer(make([]byte, 1<<20), 1<<24)
	out := json.NewEncoder(os.Stdout)
	for in.Scan() {
		// As the API machinery decodes objects (whole numbers as int64), which kstatus and Flux see.
		var obj map[string]interface{}
		check(utiljson.Unmarshal(in.Bytes(), &obj))
		var v verdict
		result, err := status.Compute(&unstructured.Unstructured{Object: obj})
		check(err)
		v.Kstatus, v.KstatusMessage = result.Status.String(), result.Message
		v.Argo, v.ArgoMessage = argo(script, in.Bytes())
		v.Flux = flux(programs, exprs, obj)
		check(out.Encode(v))
	}
	check(in.Err())
}

// argo runs the health script as Argo CD does: the object decoded from JSON into the global obj,
// the script's returned table read for status and message.
func argo(script string, object []byte) (string, string) {
	l := lua.NewState()
	defer l.Close()
	value, err := luajson.Decode(l, object)
	check(err)
	l.SetGlobal("obj", value)
	check(l.DoString(script))
	table, ok := l.Get(-1).(*lua.LTable)
	if !ok {
		fail("the health script returned %s, not a table", l.Get(-1).Type())
	}
	return lua.LVAsString(table.RawGetString("status")), lua.LVAsString(table.RawGetString("message"))
}

// flux evaluates every expression: one that cannot be evaluated (a field not there yet) makes Flux
// keep waiting, reported here as InProgress; more than one true is reported as Ambiguous, since
// the expressions are meant to exclude each other (so Flux's order of evaluation cannot matter).
func flux(programs []cel.Program, exprs []struct{ name, text string }, obj map[string]interface{}) string {
	vars := map[string]interface{}{}
	for _, k := range []string{"apiVersion", "kind", "metadata", "spec", "status"} {
		if v, ok := obj[k]; ok {
			vars[k] = v
		}
	}
	matched := []string{}
	for i, p := range programs {
		out, _, err := p.Eval(vars)
		if err != nil {
			return "InProgress"
		}
		if b, ok := out.Value().(bool); ok && b {
			matched = append(matched, exprs[i].name)
		}
	}
	switch len(matched) {
	case 0:
		return "Unknown"
	case 1:
		return matched[0]
	default:
		return "Ambiguous"
	}
}

func read(path string) string {
	if path == "" {
		fail("missing a file argument (see -h)")
	}
	b, err := os.ReadFile(path)
	check(err)
	return string(b)
}

func check(err error) {
	if err != nil {
		fail("%v", err)
	}
}

func fail(format string, args ...interface{}) {
	fmt.Fprintf(os.Stderr, "health: "+format+"\n", args...)
	os.Exit(1)
}
