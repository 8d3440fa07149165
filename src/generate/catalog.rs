//! The names, labels and amount ranges the generator draws from. Amounts are in cents.

/// A place a user spends money at, with the labels its transactions carry.
pub(super) struct Merchant {
    pub name: &'static str,
    pub purpose: &'static str,
    pub labels: &'static [&'static str],
    pub min: i64,
    pub max: i64,
    /// Relative frequency among the day-to-day purchases.
    pub weight: u32,
}

const fn m(
    name: &'static str,
    purpose: &'static str,
    labels: &'static [&'static str],
    min: i64,
    max: i64,
    weight: u32,
) -> Merchant {
    Merchant { name, purpose, labels, min, max, weight }
}

/// Day-to-day purchases. Some carry odd label combinations, no label at all or a repeated label,
/// so label groups with include and exclude lists have something to separate.
pub(super) const MERCHANTS: &[Merchant] = &[
    m("REWE Markt GmbH", "Kartenzahlung", &["GROCERIES"], 350, 9_500, 120),
    m("EDEKA Center", "Kartenzahlung", &["GROCERIES"], 300, 8_000, 80),
    m("ALDI SUED", "Kartenzahlung", &["GROCERIES"], 250, 7_000, 80),
    m("LIDL Dienstleistung", "Kartenzahlung", &["GROCERIES"], 250, 6_500, 60),
    m("Bäckerei Müller", "Kartenzahlung", &["GROCERIES", "FOOD"], 150, 1_800, 40),
    m("Kaufland Bistro", "Kartenzahlung", &["GROCERIES", "RESTAURANT"], 400, 2_500, 10),
    m("Wochenmarkt", "Einkauf", &["GROCERIES", "GROCERIES"], 500, 3_000, 2),
    m("Pizzeria Da Mario", "Kartenzahlung", &["RESTAURANT"], 900, 6_500, 30),
    m("Sushi Bar Kyoto", "Kartenzahlung", &["RESTAURANT"], 1_500, 9_000, 15),
    m("Cafe Central", "Kartenzahlung", &["RESTAURANT", "COFFEE"], 250, 1_600, 30),
    m("Lieferando.de", "Bestellung", &["RESTAURANT", "DELIVERY"], 1_200, 5_500, 25),
    m("Amazon EU S.a.r.L.", "Bestellung", &["SHOPPING"], 500, 25_000, 45),
    m("Zalando SE", "Bestellung", &["SHOPPING", "CLOTHING"], 1_500, 18_000, 20),
    m("MediaMarkt", "Kartenzahlung", &["SHOPPING", "ELECTRONICS"], 1_000, 60_000, 6),
    m("IKEA Deutschland", "Kartenzahlung", &["SHOPPING", "HOME"], 800, 40_000, 6),
    m("dm-drogerie markt", "Kartenzahlung", &["DRUGSTORE"], 200, 4_500, 40),
    m("Shell Station", "Kartenzahlung", &["FUEL", "TRANSPORT"], 2_000, 9_500, 25),
    m("ARAL Tankstelle", "Kartenzahlung", &["FUEL"], 2_000, 9_000, 20),
    m("Deutsche Bahn", "Fahrkarte", &["TRANSPORT", "TRAVEL"], 450, 15_000, 15),
    m("MVG Ticket", "Fahrkarte", &["TRANSPORT"], 350, 6_000, 20),
    m("Lufthansa", "Flug", &["TRAVEL"], 9_000, 90_000, 3),
    m("Booking.com", "Hotel", &["TRAVEL", "HOTEL"], 6_000, 70_000, 4),
    m("Trattoria Roma", "Carta", &["TRAVEL", "RESTAURANT"], 2_000, 12_000, 3),
    m("CinemaxX", "Kartenzahlung", &["ENTERTAINMENT"], 900, 4_500, 10),
    m("Eventim", "Tickets", &["ENTERTAINMENT", "TICKETS"], 2_500, 18_000, 4),
    m("Steam Purchase", "Kauf", &["ENTERTAINMENT", "GAMES"], 500, 6_000, 6),
    m("Apotheke am Markt", "Kartenzahlung", &["HEALTH", "PHARMACY"], 300, 6_000, 15),
    m("Ärzte ohne Grenzen", "Spende", &["DONATION"], 1_000, 10_000, 2),
    m("SumUp *Kiosk", "Kartenzahlung", &[], 150, 2_500, 15),
    m("PAYPAL *EBAY", "Kauf", &[], 500, 8_000, 10),
];

/// Larger amounts that absorb what is left of a month's budget.
pub(super) const SINKS: &[Merchant] = &[
    m("Geldautomat", "Bargeldauszahlung", &["CASH"], 0, 0, 4),
    m("PayPal Europe", "Zahlung", &["SHOPPING"], 0, 0, 3),
    m("Ueberweisung privat", "Danke", &["TRANSFER"], 0, 0, 2),
    m("Reisebuero Sonnenschein", "Anzahlung Reise", &["TRAVEL"], 0, 0, 1),
];

/// One-off large expenses that push an account into overdraft.
pub(super) const SHOCKS: &[Merchant] = &[
    m("Autowerkstatt Meyer", "Reparatur", &["CAR", "REPAIR"], 60_000, 250_000, 3),
    m("MediaMarkt", "Kartenzahlung", &["SHOPPING", "ELECTRONICS"], 50_000, 180_000, 2),
    m("Zahnarztpraxis Dr. Kaya", "Rechnung", &["HEALTH"], 50_000, 200_000, 2),
    m("Finanzamt", "Steuernachzahlung", &["TAX"], 50_000, 250_000, 2),
];

/// Refunds of earlier purchases: incoming amounts that keep the purchase's labels plus REFUND.
pub(super) const REFUNDS: &[Merchant] = &[
    m("Amazon EU S.a.r.L.", "Erstattung", &["SHOPPING", "REFUND"], 500, 15_000, 5),
    m("Zalando SE", "Retoure", &["SHOPPING", "CLOTHING", "REFUND"], 1_500, 12_000, 4),
    m("Lufthansa", "Erstattung Flug", &["TRAVEL", "REFUND"], 9_000, 50_000, 1),
    m("Deutsche Bahn", "Fahrpreiserstattung", &["REFUND", "TRANSPORT"], 300, 5_000, 2),
    m("PAYPAL *EBAY", "Rueckzahlung", &["REFUND"], 500, 6_000, 2),
];

pub(super) const EMPLOYERS: &[&str] = &[
    "Muster Logistik GmbH",
    "Siemens AG",
    "Stadt Muenchen",
    "Klinikum Nord gGmbH",
    "Bosch Service Solutions",
    "Baeckerei Schmidt KG",
    "ACME Software GmbH",
    "Deutsche Post AG",
];

pub(super) const SALARY_LABELS: &[&[&str]] = &[&["SALARY"], &["SALARY"], &["SALARY"], &["SALARY", "INCOME"]];

pub(super) const LANDLORDS: &[&str] =
    &["Hausverwaltung Schmidt", "Vonovia SE", "Deutsche Wohnen", "WBG Nord eG", "Privat Vermieter Weber"];

/// Rent: usually `RENT`, sometimes warm rent with utilities, sometimes under a housing label.
pub(super) const RENT_LABELS: &[&[&str]] =
    &[&["RENT"], &["RENT"], &["RENT"], &["RENT"], &["RENT", "UTILITIES"], &["HOUSING", "RENT"]];

/// Monthly contracts: utilities, telecoms and subscriptions.
pub(super) const CONTRACTS: &[Merchant] = &[
    m("Stadtwerke Muenchen", "Abschlag Strom", &["UTILITIES", "ELECTRICITY"], 3_500, 14_000, 6),
    m("Vattenfall Europe", "Abschlag", &["UTILITIES"], 3_000, 12_000, 4),
    m("Telekom Deutschland", "Rechnung", &["TELECOM"], 1_999, 6_499, 5),
    m("Vodafone GmbH", "Rechnung", &["TELECOM", "UTILITIES"], 1_499, 5_999, 4),
    m("Netflix International", "Abo", &["SUBSCRIPTION", "ENTERTAINMENT"], 799, 1_799, 5),
    m("Spotify AB", "Abo", &["SUBSCRIPTION", "ENTERTAINMENT"], 999, 1_799, 5),
    m("FitX Studio", "Mitgliedsbeitrag", &["SUBSCRIPTION", "SPORTS"], 1_999, 4_999, 3),
    m("Zeit Verlag", "Abo", &["SUBSCRIPTION", "MEDIA"], 599, 2_999, 1),
];

/// An insurer, as its canonical name. Payments spell it with varying case and whitespace.
pub(super) const INSURERS: &[&str] = &[
    "Allianz Versicherung",
    "AXA Versicherung AG",
    "HUK-COBURG",
    "ERGO Versicherung",
    "Generali Deutschland",
    "DEVK Versicherungen",
    "R+V Versicherung",
    "Debeka",
    "Gothaer Versicherung",
    "Provinzial",
    "VHV Versicherungen",
    "ARAG SE",
    "Signal Iduna",
    "CosmosDirekt",
    "Württembergische",
    "Barmenia",
];

/// The insurance kinds a policy can be, each with the label sets its payments may carry and its
/// premium range per month.
pub(super) struct InsuranceKind {
    pub purpose: &'static str,
    pub label_sets: &'static [&'static [&'static str]],
    pub monthly_min: i64,
    pub monthly_max: i64,
    pub weight: u32,
}

/// Every type label, alone and combined with the plain `INSURANCE` label; plain `INSURANCE` alone
/// (type OTHER); and policies carrying several type labels in an order that is not the order of
/// precedence, so the first label in that order must win, not the first in the list.
pub(super) const INSURANCE_KINDS: &[InsuranceKind] = &[
    InsuranceKind {
        purpose: "Beitrag Krankenversicherung",
        label_sets: &[&["HEALTHINSURANCE"], &["INSURANCE", "HEALTHINSURANCE"]],
        monthly_min: 1_500,
        monthly_max: 55_000,
        weight: 14,
    },
    InsuranceKind {
        purpose: "Beitrag Lebensversicherung",
        label_sets: &[&["LIFEINSURANCE"], &["INSURANCE", "LIFEINSURANCE"]],
        monthly_min: 1_500,
        monthly_max: 15_000,
        weight: 10,
    },
    InsuranceKind {
        purpose: "Privathaftpflicht",
        label_sets: &[&["LIABILITYINSURANCE"], &["LIABILITYINSURANCE", "INSURANCE"]],
        monthly_min: 400,
        monthly_max: 1_500,
        weight: 14,
    },
    InsuranceKind {
        purpose: "Kfz-Versicherung",
        label_sets: &[&["CARINSURANCE"], &["INSURANCE", "CARINSURANCE"], &["CARINSURANCE", "INSURANCE", "TRANSPORT"]],
        monthly_min: 2_500,
        monthly_max: 12_000,
        weight: 14,
    },
    InsuranceKind {
        purpose: "Hausratversicherung",
        label_sets: &[&["HOUSEHOLDINSURANCE"], &["INSURANCE", "HOUSEHOLDINSURANCE"]],
        monthly_min: 500,
        monthly_max: 2_500,
        weight: 12,
    },
    InsuranceKind {
        purpose: "Rechtsschutz",
        label_sets: &[&["LEGALINSURANCE"], &["INSURANCE", "LEGALINSURANCE"]],
        monthly_min: 1_500,
        monthly_max: 4_000,
        weight: 10,
    },
    InsuranceKind {
        purpose: "Versicherungsbeitrag",
        label_sets: &[&["INSURANCE"], &["INSURANCE", "TRAVEL"]],
        monthly_min: 500,
        monthly_max: 3_000,
        weight: 10,
    },
    InsuranceKind {
        purpose: "Kombi-Police",
        label_sets: &[
            &["HOUSEHOLDINSURANCE", "LIABILITYINSURANCE"],
            &["LEGALINSURANCE", "CARINSURANCE", "INSURANCE"],
            &["LIFEINSURANCE", "HEALTHINSURANCE"],
        ],
        monthly_min: 1_000,
        monthly_max: 6_000,
        weight: 6,
    },
];

/// Relative weights of a policy's payment frequency: monthly, quarterly, half-yearly, yearly,
/// irregular, a single payment.
pub(super) const FREQUENCY_WEIGHTS: [u32; 6] = [42, 18, 10, 16, 7, 7];
