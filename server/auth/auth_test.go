package auth

import (
	"errors"
	"testing"

	"golang.org/x/crypto/bcrypt"
)

// An unknown user's login compares against a hash of the same cost as a
// real user's, so both take the same time.
func TestCheckPassword_UnknownUserCostsTheSame(t *testing.T) {
	real, err := HashPassword("correct horse battery")
	if err != nil {
		t.Fatal(err)
	}
	realCost, err := bcrypt.Cost([]byte(real))
	if err != nil {
		t.Fatal(err)
	}
	dummyCost, err := bcrypt.Cost(dummyHash())
	if err != nil {
		t.Fatal(err)
	}
	if dummyCost != realCost {
		t.Fatalf("dummy hash cost %d, real hash cost %d", dummyCost, realCost)
	}
	if err := CheckPassword("", "anything"); !errors.Is(err, ErrWrongPassword) {
		t.Fatalf("unknown user: %v", err)
	}
	if err := CheckPassword(real, "correct horse battery"); err != nil {
		t.Fatalf("right password: %v", err)
	}
	if err := CheckPassword(real, "wrong horse battery"); !errors.Is(err, ErrWrongPassword) {
		t.Fatalf("wrong password: %v", err)
	}
}
