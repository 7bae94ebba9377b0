package hub

import (
	"testing"
	"time"
)

func TestBackoff(t *testing.T) {
	b := backoff{min: 10 * time.Second, max: 10 * time.Minute}
	var got []time.Duration
	for range 8 {
		got = append(got, b.next())
	}
	want := []time.Duration{10 * time.Second, 20 * time.Second, 40 * time.Second, 80 * time.Second, 160 * time.Second, 320 * time.Second, 600 * time.Second, 600 * time.Second}
	for i := range want {
		if got[i] != want[i] {
			t.Fatalf("delays %v, want %v", got, want)
		}
	}
	if !b.failing() {
		t.Fatal("not failing after failures")
	}
	b.reset()
	if b.failing() || b.next() != 10*time.Second {
		t.Fatal("reset does not start over")
	}

	j := backoff{min: 500 * time.Millisecond, max: 30 * time.Second, jitter: true}
	for i := range 12 {
		d := j.next()
		if d < j.cur/2 || d > j.cur {
			t.Fatalf("attempt %d: jittered delay %v outside [%v, %v]", i, d, j.cur/2, j.cur)
		}
	}
	if j.cur != 30*time.Second {
		t.Fatalf("jittered backoff at %v after 12 failures, want the 30s cap", j.cur)
	}
}
