package sms

import "unicode/utf16"

// Encodings of an SMS body.
const (
	GSM7 = "GSM-7"
	UCS2 = "UCS-2"
)

// gsmBasic is the GSM 03.38 default alphabet: one septet each.
const gsmBasic = "@£$¥èéùìòÇ\nØø\rÅåΔ_ΦΓΛΩΠΨΣΘΞ\x1bÆæßÉ !\"#¤%&'()*+,-./0123456789:;<=>?" +
	"¡ABCDEFGHIJKLMNOPQRSTUVWXYZÄÖÑÜ§¿abcdefghijklmnopqrstuvwxyzäöñüà"

// gsmExtended are the characters of the extension table: two septets each
// (an escape and the character).
const gsmExtended = "^{}\\[~]|€\f"

var gsmBasicSet, gsmExtSet = runeSet(gsmBasic), runeSet(gsmExtended)

func runeSet(s string) map[rune]bool {
	m := make(map[rune]bool)
	for _, r := range s {
		m[r] = true
	}
	return m
}

// Segments says how a body travels: its encoding, its length in that
// encoding's units (septets for GSM-7, UTF-16 code units for UCS-2) and
// how many segments carry it. A body that fits one segment takes 160
// septets or 70 units; a longer one is split into concatenated segments
// of 153 septets or 67 units (the rest of each holds the joining header).
// An extension character is not split from its escape, nor a surrogate
// pair.
type Segments struct {
	Encoding string `json:"encoding"`
	Units    int    `json:"units"`
	Count    int    `json:"segments"`
}

// Count returns how the body travels.
func Count(body string) Segments {
	gsm := true
	for _, r := range body {
		if !gsmBasicSet[r] && !gsmExtSet[r] {
			gsm = false
			break
		}
	}
	if gsm {
		var sizes []int
		for _, r := range body {
			n := 1
			if gsmExtSet[r] {
				n = 2
			}
			sizes = append(sizes, n)
		}
		return split(GSM7, sizes, 160, 153)
	}
	var sizes []int
	for _, r := range body {
		sizes = append(sizes, len(utf16.Encode([]rune{r})))
	}
	return split(UCS2, sizes, 70, 67)
}

// split counts the segments of characters of the given sizes.
func split(enc string, sizes []int, single, multi int) Segments {
	total := 0
	for _, n := range sizes {
		total += n
	}
	s := Segments{Encoding: enc, Units: total, Count: 1}
	if total <= single {
		return s
	}
	used := 0
	for _, n := range sizes {
		if used+n > multi {
			s.Count++
			used = 0
		}
		used += n
	}
	return s
}
