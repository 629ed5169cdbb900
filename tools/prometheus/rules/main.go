// Command rules checks and evaluates Prometheus alerting rules the way Prometheus does: the
// rule file is parsed and validated by Prometheus' own rulefmt (PromQL, labels, annotation
// templates), and each alerting rule is evaluated by Prometheus' rules package (pending, `for`,
// firing, annotations rendered with their queries) with its PromQL engine over a TSDB holding
// the given series. Used by the alert-rules test (tests/alert_rules.rs) on the chart's rendered
// PrometheusRule.
//
//	rules -rules prometheusrule.yaml < input.json
//
// The rules file is a Prometheus rule file or a PrometheusRule object (its spec is the rule
// file). The input names the first evaluation time, the step, the number of steps and the series
// in PromQL's series notation (`metric{label="v"} 0x30`, `_` for a missing sample, `stale` for a
// series that left the scrape), one value per step. The output is one JSON line per active
// alert per step: step, alert name, state (pending or firing), labels, annotations.
package main

import (
	"context"
	"encoding/json"
	"fmt"
	"log/slog"
	"net/url"
	"os"
	"time"

	"github.com/prometheus/common/model"
	"github.com/prometheus/prometheus/model/labels"
	"github.com/prometheus/prometheus/model/rulefmt"
	"github.com/prometheus/prometheus/promql"
	"github.com/prometheus/prometheus/promql/parser"
	"github.com/prometheus/prometheus/rules"
	"github.com/prometheus/prometheus/tsdb"
	"go.yaml.in/yaml/v3"
)

type input struct {
	// Unix seconds of the first evaluation (and of the first sample).
	Start int64 `json:"start"`
	// A Prometheus duration, e.g. "1m": between samples and between evaluations.
	Step   string   `json:"step"`
	Steps  int      `json:"steps"`
	Series []string `json:"series"`
}

type active struct {
	Step        int               `json:"step"`
	Alert       string            `json:"alert"`
	State       string            `json:"state"`
	Labels      map[string]string `json:"labels"`
	Annotations map[string]string `json:"annotations"`
}

func main() {
	if len(os.Args) != 3 || os.Args[1] != "-rules" {
		fail("usage: rules -rules FILE < input.json")
	}
	groups := parseRules(os.Args[2])
	var in input
	dec := json.NewDecoder(os.Stdin)
	dec.DisallowUnknownFields()
	check(dec.Decode(&in), "input")
	step, err := model.ParseDuration(in.Step)
	check(err, "step")
	if in.Steps < 1 || in.Steps > 24*60 {
		fail("steps must be 1..1440, not %d", in.Steps)
	}

	dir, err := os.MkdirTemp("", "rules-tsdb-")
	check(err, "temporary directory")
	defer os.RemoveAll(dir)
	logger := slog.New(slog.DiscardHandler)
	db, err := tsdb.Open(dir, logger, nil, tsdb.DefaultOptions(), nil)
	check(err, "open TSDB")
	defer db.Close()
	start := time.Unix(in.Start, 0)
	load(db, in.Series, start, time.Duration(step), in.Steps)

	engine := promql.NewEngine(promql.EngineOpts{
		Logger:        logger,
		MaxSamples:    1_000_000,
		Timeout:       time.Minute,
		LookbackDelta: 5 * time.Minute,
	})
	query := rules.EngineQueryFunc(engine, db)
	var alerting []*rules.AlertingRule
	for _, g := range groups.Groups {
		for _, r := range g.Rules {
			if r.Alert == "" {
				fail("group %s: only alerting rules are evaluated, %q is a recording rule", g.Name, r.Record)
			}
			expr, err := parser.NewParser(parser.Options{}).ParseExpr(r.Expr)
			check(err, r.Alert)
			alerting = append(alerting, rules.NewAlertingRule(
				r.Alert, expr, time.Duration(r.For), time.Duration(r.KeepFiringFor),
				labels.FromMap(r.Labels), labels.FromMap(r.Annotations), labels.EmptyLabels(),
				"", true, logger,
			))
		}
	}
	out := json.NewEncoder(os.Stdout)
	external, err := url.Parse("http://prometheus.example")
	check(err, "external URL")
	for i := 0; i < in.Steps; i++ {
		ts := start.Add(time.Duration(i) * time.Duration(step))
		for _, r := range alerting {
			_, err := r.Eval(context.Background(), 0, ts, query, external, 0)
			check(err, r.Name())
			for _, a := range r.ActiveAlerts() {
				check(out.Encode(active{
					Step:        i,
					Alert:       r.Name(),
					State:       a.State.String(),
					Labels:      a.Labels.Map(),
					Annotations: a.Annotations.Map(),
				}), "output")
			}
		}
	}
}

// parseRules reads a rule file, or a PrometheusRule object whose spec is one, and validates it
// with rulefmt as Prometheus does when it loads a rule file (unknown fields refused).
func parseRules(path string) *rulefmt.RuleGroups {
	text, err := os.ReadFile(path)
	check(err, path)
	var object struct {
		Kind string    `yaml:"kind"`
		Spec yaml.Node `yaml:"spec"`
	}
	check(yaml.Unmarshal(text, &object), path)
	if object.Kind == "PrometheusRule" {
		text, err = yaml.Marshal(&object.Spec)
		check(err, path)
	}
	groups, errs := rulefmt.Parse(text, false, model.UTF8Validation, parser.NewParser(parser.Options{}), slog.New(slog.DiscardHandler))
	if len(errs) > 0 {
		for _, e := range errs {
			fmt.Fprintf(os.Stderr, "%s: %v\n", path, e)
		}
		os.Exit(1)
	}
	if len(groups.Groups) == 0 {
		fail("%s: no rule groups", path)
	}
	return groups
}

// load appends every series' values, step by step, in one append.
func load(db *tsdb.DB, series []string, start time.Time, step time.Duration, steps int) {
	p := parser.NewParser(parser.Options{})
	type loaded struct {
		labels labels.Labels
		values []parser.SequenceValue
	}
	all := make([]loaded, 0, len(series))
	for _, s := range series {
		l, v, err := p.ParseSeriesDesc(s)
		check(err, s)
		if len(v) > steps {
			fail("%s: %d values for %d steps", s, len(v), steps)
		}
		all = append(all, loaded{l, v})
	}
	app := db.Appender(context.Background())
	for i := 0; i < steps; i++ {
		t := start.Add(time.Duration(i) * step).UnixMilli()
		for _, s := range all {
			if i >= len(s.values) || s.values[i].Omitted {
				continue
			}
			// A `stale` value is Prometheus' staleness marker already.
			_, err := app.Append(0, s.labels, t, s.values[i].Value)
			check(err, s.labels.String())
		}
	}
	check(app.Commit(), "commit")
}

func check(err error, what string) {
	if err != nil {
		fail("%s: %v", what, err)
	}
}

func fail(format string, args ...any) {
	fmt.Fprintf(os.Stderr, "rules: "+format+"\n", args...)
	os.Exit(2)
}
