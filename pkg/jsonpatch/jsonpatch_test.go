package jsonpatch

import (
	"encoding/json"
	"errors"
	"reflect"
	"strings"
	"testing"
)

func TestParsePointer(t *testing.T) {
	for _, c := range []struct {
		in   string
		want Pointer
	}{
		{"", Pointer{}},
		{"/", Pointer{""}},
		{"/a/b", Pointer{"a", "b"}},
		{"/a~1b/m~0n", Pointer{"a/b", "m~n"}},
		{"/items/-", Pointer{"items", "-"}},
		{"/~01", Pointer{"~1"}},
	} {
		got, err := ParsePointer(c.in)
		if err != nil || !reflect.DeepEqual(got, c.want) {
			t.Errorf("ParsePointer(%q) = %q, %v; want %q", c.in, got, err, c.want)
		}
		if got.String() != c.in && c.in != "" {
			t.Errorf("%q.String() = %q", c.in, got.String())
		}
	}
	for _, bad := range []string{"a", "/a~", "/a~2", "~1"} {
		if _, err := ParsePointer(bad); err == nil {
			t.Errorf("ParsePointer(%q) accepted", bad)
		}
	}
}

func TestIndex(t *testing.T) {
	for _, c := range []struct {
		tok string
		max int
		ok  bool
	}{{"0", 1, true}, {"3", 4, true}, {"4", 4, false}, {"01", 4, false}, {"-1", 4, false}, {"", 4, false}, {"1e2", 400, false}, {"99999999999", 1 << 30, false}} {
		_, err := Index(c.tok, c.max)
		if (err == nil) != c.ok {
			t.Errorf("Index(%q, %d): %v", c.tok, c.max, err)
		}
	}
}

func TestParse(t *testing.T) {
	ops, err := Parse([]byte(`[
		{"op":"add","path":"/title","value":"hello"},
		{"op":"add","path":"/items/-","value":{"n":1.5,"tags":["a"]}},
		{"op":"add","path":"/count","value":0,"datatype":"counter"},
		{"op":"remove","path":"/old"},
		{"op":"replace","path":"/n","value":12345678901234567890},
		{"op":"move","from":"/a","path":"/b"},
		{"op":"copy","from":"/a","path":"/a2"},
		{"op":"test","path":"/title","value":"hello","ignored":true},
		{"op":"splice","path":"/text","pos":3,"del":1,"value":"xy"},
		{"op":"increment","path":"/count","value":-2}
	]`), Limits{})
	if err != nil {
		t.Fatal(err)
	}
	if len(ops) != 10 {
		t.Fatalf("%d ops", len(ops))
	}
	if ops[2].Datatype != DatatypeCounter || ops[4].Value != json.Number("12345678901234567890") {
		t.Errorf("ops: %+v", ops)
	}
	if ops[8].Pos != 3 || ops[8].Del != 1 || ops[8].Value != "xy" {
		t.Errorf("splice: %+v", ops[8])
	}
	if n, _ := Int(ops[9].Value); n != -2 {
		t.Errorf("increment: %+v", ops[9])
	}
	if !reflect.DeepEqual(ops[5].From, Pointer{"a"}) || !reflect.DeepEqual(ops[5].Path, Pointer{"b"}) {
		t.Errorf("move: %+v", ops[5])
	}
}

func TestParseErrors(t *testing.T) {
	for _, c := range []struct{ in, want string }{
		{`{}`, "want a JSON array"},
		{`null`, "not null"},
		{`[1]`, "want a JSON array"},
		{`[] []`, "data after"},
		{`[{"path":"/a"}]`, `missing "op"`},
		{`[{"op":"add","value":1}]`, `missing "path"`},
		{`[{"op":"add","path":"/a"}]`, `needs a "value"`},
		{`[{"op":"frobnicate","path":"/a"}]`, `unknown op "frobnicate"`},
		{`[{"op":"add","path":"a","value":1}]`, `must be empty or start with "/"`},
		{`[{"op":"move","path":"/a/b","from":"/a"}]`, "into itself"},
		{`[{"op":"copy","path":"/a"}]`, `missing "from"`},
		{`[{"op":"splice","path":"/t","pos":-1,"value":"x"}]`, `"pos" must be a non-negative integer`},
		{`[{"op":"splice","path":"/t","pos":1.5,"value":"x"}]`, `"pos" must be a non-negative integer`},
		{`[{"op":"splice","path":"/t","value":3}]`, `"value" must be a string`},
		{`[{"op":"increment","path":"/c","value":1.5}]`, "must be an integer"},
		{`[{"op":"add","path":"/c","value":"x","datatype":"counter"}]`, "must be an integer"},
		{`[{"op":"add","path":"/c","value":1,"datatype":"float"}]`, "not supported"},
		{`[{"op":"remove","path":""}]`, "whole document"},
		{`[{"op":"add","path":"/a","value":` + strings.Repeat("[", 70) + strings.Repeat("]", 70) + `}]`, "deeper than 64"},
		{"[\"\xff\"]", "not UTF-8"},
	} {
		_, err := Parse([]byte(c.in), Limits{})
		if err == nil || !errors.Is(err, ErrInvalid) || !strings.Contains(err.Error(), c.want) {
			t.Errorf("Parse(%s) = %v; want an error containing %q", c.in, err, c.want)
		}
	}
	many := "[" + strings.TrimSuffix(strings.Repeat(`{"op":"remove","path":"/a"},`, 11), ",") + "]"
	if _, err := Parse([]byte(many), Limits{MaxOps: 10}); err == nil || !strings.Contains(err.Error(), "at most 10") {
		t.Errorf("11 ops with MaxOps 10: %v", err)
	}
}

// FuzzParse: Parse never panics, and what it accepts is consistent: every
// pointer re-parses to itself from its string form, and counters hold
// integers.
func FuzzParse(f *testing.F) {
	for _, s := range []string{
		`[{"op":"add","path":"/a~1b/-","value":{"x":[1,2.5,"s",null,true]}}]`,
		`[{"op":"splice","path":"/t","pos":0,"del":2,"value":"é"}]`,
		`[{"op":"move","from":"/a","path":"/b"},{"op":"test","path":"","value":{}}]`,
		`[{"op":"add","path":"/c","value":7,"datatype":"counter"},{"op":"increment","path":"/c","value":1}]`,
		`[]`, `[{}]`, `[null]`, `{"op":"add"}`,
	} {
		f.Add([]byte(s))
	}
	f.Fuzz(func(t *testing.T, data []byte) {
		ops, err := Parse(data, Limits{MaxOps: 50, MaxDepth: 16})
		if err != nil {
			if !errors.Is(err, ErrInvalid) {
				t.Fatalf("error does not wrap ErrInvalid: %v", err)
			}
			return
		}
		if len(ops) > 50 {
			t.Fatalf("%d ops past MaxOps", len(ops))
		}
		for _, op := range ops {
			for _, p := range []Pointer{op.Path, op.From} {
				q, err := ParsePointer(p.String())
				if err != nil || !reflect.DeepEqual(q, p) && len(p) > 0 {
					t.Fatalf("pointer %q does not round-trip: %q, %v", p, q, err)
				}
			}
			if op.Datatype == DatatypeCounter || op.Op == OpIncrement {
				if _, err := Int(op.Value); err != nil {
					t.Fatalf("counter value %v accepted: %v", op.Value, err)
				}
			}
			if depth(op.Value, 0) > 16 {
				t.Fatalf("value deeper than MaxDepth accepted")
			}
		}
	})
}
