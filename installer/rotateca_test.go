package installer

import (
	"context"
	"strings"
	"testing"

	"anvil.dev/anvil/pki"
)

// TestResumeFrom: a rotation run again resumes where the masters' PKI
// says it stopped.
func TestResumeFrom(t *testing.T) {
	for _, tc := range []struct {
		states map[string]string
		want   string
	}{
		{map[string]string{"m1": caNone, "m2": caNone, "m3": caNone}, ""},
		{map[string]string{"m1": caNext, "m2": caNone, "m3": caNone}, pki.RotateTrust},
		{map[string]string{"m1": caNext, "m2": caNext, "m3": caNext}, pki.RotateTrust},
		{map[string]string{"m1": caReissued, "m2": caNext, "m3": caNext}, pki.RotateReissue},
		{map[string]string{"m1": caReissued, "m2": caReissued, "m3": caReissued}, pki.RotateDrop},
		{map[string]string{"m1": caNone, "m2": caReissued, "m3": caReissued}, pki.RotateDrop},
	} {
		if got := resumeFrom(tc.states); got != tc.want {
			t.Errorf("resumeFrom(%v) = %q, want %q", tc.states, got, tc.want)
		}
	}
}

func TestRotateCARefusesStagesOutOfOrder(t *testing.T) {
	for _, stages := range [][]string{{"drop", "trust"}, {"trust", "drop"}, {"renew"}} {
		_, err := RotateCA(context.Background(), RotateCAOptions{Stages: stages})
		if err == nil || !strings.Contains(err.Error(), "stage") {
			t.Errorf("stages %v: %v", stages, err)
		}
	}
}
