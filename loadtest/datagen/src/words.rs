//! Word lists the generator draws from. Everything is a fixed slice, so iteration order is
//! part of the program and the output depends on the seed only.

/// How a product is packed; decides the count label, intake text and capacity.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Form {
    Tablet,
    Capsule,
    SoftGel,
    Stick,
    Powder,
    Liquid,
}

/// One ingredient family: the names it sells under, its main-function claims (each with
/// the categories `billing::items::classify` must find in it — a unit test checks), the
/// forms it comes in, its own title adjectives and the amount the `standard` text names.
#[derive(Debug)]
pub struct Family {
    pub names: &'static [&'static str],
    pub claims: &'static [(&'static str, &'static [&'static str])],
    pub forms: &'static [Form],
    pub adjectives: &'static [&'static str],
    pub standard: &'static str,
    /// Relative frequency in the catalog.
    pub weight: u32,
}

use Form::*;

pub const FAMILIES: &[Family] = &[
    // ---- EYE
    Family {
        names: &["루테인", "루테인 지아잔틴", "마리골드 루테인", "루테인 아이케어"],
        claims: &[
            ("노화로 인해 감소될 수 있는 황반색소밀도를 유지하여 눈 건강에 도움을 줄 수 있음", &["EYE"]),
            ("눈의 황반색소밀도 유지에 도움을 줄 수 있음", &["EYE"]),
        ],
        forms: &[Capsule, SoftGel, Tablet],
        adjectives: &["아이", "블루라이트"],
        standard: "루테인 20mg",
        weight: 6,
    },
    Family {
        names: &["빌베리", "아스타잔틴", "헤마토코쿠스 아스타잔틴", "빌베리 아이"],
        claims: &[
            ("눈의 피로도 개선에 도움을 줄 수 있음", &["EYE", "FATIGUE"]),
        ],
        forms: &[SoftGel, Capsule],
        adjectives: &[],
        standard: "아스타잔틴 12mg",
        weight: 3,
    },
    Family {
        names: &["rTG 오메가3", "알티지 오메가3", "초임계 알티지 오메가3", "식물성 오메가3"],
        claims: &[
            ("혈중 중성지질 개선, 혈행 개선에 도움을 줄 수 있음, 건조한 눈을 개선하여 눈 건강에 도움을 줄 수 있음", &["EYE"]),
        ],
        forms: &[SoftGel],
        adjectives: &["장용성"],
        standard: "EPA 및 DHA의 합 600mg",
        weight: 6,
    },
    // ---- BONE
    Family {
        names: &["칼슘 마그네슘 비타민D", "칼마디", "해조칼슘", "칼슘 마그네슘 아연"],
        claims: &[
            ("뼈와 치아 형성에 필요, 골다공증 발생 위험 감소에 도움을 줌", &["BONE"]),
            ("뼈와 치아 형성에 필요, 신경과 근육 기능 유지에 필요", &["BONE"]),
        ],
        forms: &[Tablet],
        adjectives: &["흡수가 빠른"],
        standard: "칼슘 700mg",
        weight: 4,
    },
    Family {
        names: &["비타민D3 2000IU", "비타민D 1000IU", "MBP 엠비피", "뼈엔 엠비피"],
        claims: &[
            ("칼슘과 인이 흡수되고 이용되는데 필요, 뼈의 형성과 유지에 필요, 골다공증 발생 위험 감소에 도움을 줌", &["BONE"]),
            ("뼈 건강에 도움을 줄 수 있음", &["BONE"]),
        ],
        forms: &[Tablet, SoftGel, Capsule],
        adjectives: &[],
        standard: "비타민D 50μg",
        weight: 3,
    },
    // ---- BRAIN
    Family {
        names: &["포스파티딜세린", "PS 포스파티딜세린", "브레인 PS"],
        claims: &[
            ("노화로 인해 저하된 인지력 개선에 도움을 줄 수 있음, 두뇌 건강 유지에 도움", &["BRAIN"]),
        ],
        forms: &[Capsule, SoftGel],
        adjectives: &["수험생"],
        standard: "포스파티딜세린 300mg",
        weight: 3,
    },
    Family {
        names: &["은행잎추출물", "징코 은행잎", "은행잎 징코빌로바"],
        claims: &[
            ("기억력 개선, 혈액순환에 도움을 줄 수 있음, 두뇌 활동에 도움", &["BRAIN", "FATIGUE"]),
        ],
        forms: &[Tablet, Capsule],
        adjectives: &[],
        standard: "은행잎추출물 120mg",
        weight: 2,
    },
    Family {
        names: &["DHA 오메가3", "키즈 DHA", "어린이 DHA 젤리"],
        claims: &[
            ("두뇌 발달과 눈 건강에 도움을 줄 수 있음 (EPA 및 DHA 함유 유지)", &["EYE", "BRAIN"]),
        ],
        forms: &[SoftGel, Stick],
        adjectives: &[],
        standard: "DHA 300mg",
        weight: 2,
    },
    // ---- INTESTINE
    Family {
        names: &[
            "프로바이오틱스",
            "생유산균 19",
            "락토 유산균",
            "모유유산균",
            "신바이오틱스",
            "냉장 유산균",
        ],
        claims: &[
            ("유산균 증식 및 유해균 억제, 배변활동 원활에 도움을 줄 수 있음", &["INTESTINE"]),
            ("유산균 증식 및 유해균 억제에 도움을 줄 수 있음", &["INTESTINE"]),
        ],
        forms: &[Capsule, Stick, Powder],
        adjectives: &["100억", "300억", "가족"],
        standard: "프로바이오틱스 수 100억 CFU",
        weight: 7,
    },
    Family {
        names: &["차전자피 식이섬유", "프리바이오틱스 FOS", "치커리 이눌린", "쾌변 파이버"],
        claims: &[
            ("배변활동 원활에 도움을 줄 수 있음", &["INTESTINE"]),
            ("장내 유익균 증식 및 배변활동 원활에 도움을 줄 수 있음", &["INTESTINE"]),
        ],
        forms: &[Stick, Powder],
        adjectives: &["푸룬"],
        standard: "식이섬유 5g",
        weight: 3,
    },
    // ---- LIVER
    Family {
        names: &["밀크씨슬", "실리마린 밀크씨슬", "밀크시슬 리버"],
        claims: &[
            ("간 건강에 도움을 줄 수 있음", &["LIVER"]),
        ],
        forms: &[Tablet, Capsule],
        adjectives: &[],
        standard: "실리마린 130mg",
        weight: 4,
    },
    Family {
        names: &["헛개나무 열매", "헛개 숙취", "헛개 진액"],
        claims: &[
            ("알코올성 손상으로부터 간을 보호하는 데 도움을 줄 수 있음", &["LIVER"]),
        ],
        forms: &[Liquid, Stick, Tablet],
        adjectives: &["국산"],
        standard: "헛개나무과병추출분말 1.5g",
        weight: 2,
    },
    // ---- SKIN
    Family {
        names: &["저분자 콜라겐", "피쉬 콜라겐", "콜라겐 펩타이드", "엘라스틴 콜라겐"],
        claims: &[
            ("피부 보습에 도움을 줄 수 있음", &["SKIN"]),
            ("자외선에 의한 피부 손상으로부터 피부 건강을 유지하는 데 도움을 줄 수 있음, 피부 보습에 도움", &["SKIN"]),
        ],
        forms: &[Stick, Powder, Liquid, Tablet],
        adjectives: &["뷰티", "이너뷰티"],
        standard: "콜라겐 펩타이드 1,000mg",
        weight: 5,
    },
    Family {
        names: &["히알루론산", "세라마이드", "비오틴 히알루론산"],
        claims: &[
            ("피부 보습에 도움을 줄 수 있음", &["SKIN"]),
        ],
        forms: &[Capsule, Tablet],
        adjectives: &[],
        standard: "히알루론산 120mg",
        weight: 2,
    },
    // ---- ANTIOXIDANT
    Family {
        names: &["비타민C 1000", "메가도스 비타민C", "리포조말 비타민C", "비타민C 파우더"],
        claims: &[
            ("결합조직 형성과 기능유지에 필요, 유해산소로부터 세포를 보호하는 데 필요한 항산화 작용", &["ANTIOXIDANT"]),
        ],
        forms: &[Tablet, Powder, Stick],
        adjectives: &["영국산"],
        standard: "비타민C 1,000mg",
        weight: 5,
    },
    Family {
        names: &["코엔자임Q10", "코큐텐", "프로폴리스", "녹차 카테킨", "셀레늄"],
        claims: &[
            ("항산화, 높은 혈압 감소에 도움을 줄 수 있음", &["ANTIOXIDANT"]),
            ("항산화, 구강에서의 항균작용에 도움을 줄 수 있음", &["ANTIOXIDANT"]),
            ("유해산소로부터 세포를 보호하는 데 필요 (항산화)", &["ANTIOXIDANT"]),
        ],
        forms: &[Capsule, SoftGel, Liquid],
        adjectives: &["브라질"],
        standard: "코엔자임Q10 100mg",
        weight: 4,
    },
    // ---- FATIGUE
    Family {
        names: &["홍삼정", "홍삼 스틱", "홍삼 농축액", "홍삼정 에브리타임", "흑삼"],
        claims: &[
            ("면역력 증진, 피로개선, 혈소판 응집억제를 통한 혈액흐름, 기억력 개선, 항산화에 도움을 줄 수 있음", &["ANTIOXIDANT", "FATIGUE"]),
            ("면역력 증진, 피로개선에 도움을 줄 수 있음", &["FATIGUE"]),
        ],
        forms: &[Powder, Stick, Liquid],
        adjectives: &["6년근", "국산 6년근", "명품"],
        standard: "진세노사이드 Rg1, Rb1 및 Rg3의 합 8mg",
        weight: 6,
    },
    Family {
        names: &["비타민B 컴플렉스", "활성형 비타민B", "고함량 비타민B"],
        claims: &[
            ("체내 에너지 생성에 필요, 피로 회복에 도움을 줄 수 있음", &["FATIGUE"]),
        ],
        forms: &[Tablet],
        adjectives: &["직장인"],
        standard: "비타민B1 50mg",
        weight: 3,
    },
    Family {
        names: &["L-아르기닌", "아르기닌 6000", "홍경천 추출물"],
        claims: &[
            ("혈액순환 개선 및 활력 증진에 도움을 줄 수 있음", &["FATIGUE"]),
            ("스트레스로 인한 피로 개선에 도움을 줄 수 있음", &["FATIGUE"]),
        ],
        forms: &[Liquid, Stick, Tablet],
        adjectives: &[],
        standard: "L-아르기닌 6,000mg",
        weight: 2,
    },
    // ---- several
    Family {
        names: &["멀티비타민 미네랄", "종합비타민", "우먼 멀티비타민", "맨즈 멀티비타민"],
        claims: &[
            ("체내 에너지 생성, 뼈의 형성, 눈 건강, 피부 건강, 항산화에 필요한 비타민과 무기질 13종", &["EYE", "BONE", "SKIN", "ANTIOXIDANT"]),
        ],
        forms: &[Tablet],
        adjectives: &["올인원", "데일리"],
        standard: "비타민 및 무기질 13종",
        weight: 5,
    },
    // ---- ETC (no keyword)
    Family {
        names: &["아연", "마그네슘", "철분 엽산", "임산부 엽산"],
        claims: &[
            ("정상적인 면역기능에 필요, 정상적인 세포분열에 필요", &["ETC"]),
            ("에너지 이용에 필요, 신경과 근육 기능 유지에 필요", &["ETC"]),
            ("체내 산소운반과 혈액생성에 필요, 태아 신경관의 정상 발달에 필요", &["ETC"]),
        ],
        forms: &[Tablet, Capsule],
        adjectives: &[],
        standard: "아연 8.5mg",
        weight: 3,
    },
    Family {
        names: &["가르시니아", "카테킨 다이어트", "잔티젠", "보이차 추출물"],
        claims: &[
            ("탄수화물이 지방으로 합성되는 것을 억제하여 체지방 감소에 도움을 줄 수 있음", &["ETC"]),
        ],
        forms: &[Tablet, Capsule, Stick],
        adjectives: &["슬림", "컷팅"],
        standard: "HCA 750mg",
        weight: 3,
    },
    Family {
        names: &["쏘팔메토", "옥타코사놀", "석류 콜라겐 젤리", "글루코사민", "보스웰리아"],
        claims: &[
            ("전립선 건강의 유지에 도움을 줄 수 있음", &["ETC"]),
            ("지구력 증진에 도움을 줄 수 있음", &["ETC"]),
            ("갱년기 여성의 건강에 도움을 줄 수 있음", &["ETC"]),
            ("관절 및 연골 건강에 도움을 줄 수 있음", &["ETC"]),
        ],
        forms: &[SoftGel, Capsule, Tablet],
        adjectives: &["맨즈"],
        standard: "쏘팔메토열매추출물 320mg",
        weight: 3,
    },
];

pub const TITLE_ADJECTIVES: &[&str] = &[
    "프리미엄",
    "리얼",
    "퓨어",
    "데일리",
    "맥스",
    "더블",
    "하이",
    "슈퍼",
    "오리지널",
    "식물성",
    "고함량",
    "순수",
    "유기농",
    "뉴",
    "닥터스",
    "키즈",
    "패밀리",
    "트리플",
    "시니어",
    "에센셜",
];

pub const TITLE_VARIANTS: &[&str] = &[
    "골드",
    "플러스",
    "프로",
    "포르테",
    "알파",
    "케어",
    "액티브",
    "2X",
    "시그니처",
    "리뉴얼",
    "퀵",
    "라이트",
];

pub const BRAND_PREFIXES: &[&str] = &[
    "뉴트리",
    "바이오",
    "헬스",
    "그린",
    "네이처",
    "라이프",
    "닥터",
    "웰빙",
    "한빛",
    "참좋은",
    "자연",
    "메디",
    "굿모닝",
    "데일리",
    "퓨어",
    "하루",
    "청정",
    "푸른",
    "새봄",
    "온누리",
    "솔빛",
    "해담",
    "미래",
    "정성",
    "한결",
    "다온",
    "바른",
    "순수",
    "리얼",
    "에버",
];

pub const BRAND_SUFFIXES: &[&str] = &[
    "랩",
    "팜",
    "케어",
    "플러스",
    "생활건강",
    "헬스케어",
    "바이오텍",
    "제약",
    "웰니스",
    "코리아",
    "원",
    "라이프",
    "뉴트리션",
    "하우스",
];

pub const PRECAUTIONS: &[&str] = &[
    "특정 질환이 있거나 알레르기 체질이신 분은 섭취 전 전문가와 상담하십시오.",
    "임산부, 수유부 및 어린이는 섭취에 주의하십시오.",
    "이상사례 발생 시 섭취를 중단하고 전문가와 상담하십시오.",
    "과다 섭취 시 복부 불편감이 있을 수 있습니다.",
    "의약품을 복용 중인 경우 섭취 전 전문가와 상담하십시오.",
    "개봉 후에는 가급적 빨리 섭취하십시오.",
    "원료 특유의 맛과 냄새가 날 수 있습니다.",
];

pub const AUDIENCES: &[&str] = &[
    "바쁜 직장인",
    "불규칙한 식습관을 가진 분",
    "중장년층",
    "수험생",
    "운동을 즐기는 분",
    "부모님 선물을 찾는 분",
    "야외 활동이 적은 분",
    "건강 관리를 시작하는 분",
];

pub const PRESERVATION: &[&str] = &[
    "직사광선을 피하고 서늘하고 건조한 곳에 보관하십시오.",
    "어린이의 손이 닿지 않는 곳에 보관하십시오.",
    "개봉 후 냉장 보관하십시오.",
    "습기가 많은 곳을 피해 실온 보관하십시오.",
];

pub const TAGLINES: &[&str] = &[
    "엄선한 원료만을 담았습니다.",
    "GMP 인증 시설에서 제조하였습니다.",
    "하루 한 번으로 간편하게 챙기세요.",
    "식약처 인정 기능성 원료를 사용했습니다.",
    "부형제를 최소화한 깔끔한 배합입니다.",
    "온 가족이 함께 드실 수 있습니다.",
];

pub const SURNAMES: &[(&str, u32)] = &[
    ("김", 215),
    ("이", 147),
    ("박", 84),
    ("최", 47),
    ("정", 44),
    ("강", 23),
    ("조", 21),
    ("윤", 20),
    ("장", 19),
    ("임", 16),
    ("한", 15),
    ("오", 15),
    ("서", 14),
    ("신", 14),
    ("권", 13),
    ("황", 13),
    ("안", 13),
    ("송", 12),
    ("전", 11),
    ("홍", 11),
    ("유", 10),
    ("고", 9),
    ("문", 9),
    ("양", 8),
    ("손", 8),
];

pub const GIVEN_NAMES: &[&str] = &[
    "민준", "서준", "도윤", "예준", "시우", "하준", "주원", "지호", "지후", "준우", "준서", "건우",
    "현우", "지훈", "우진", "선우", "서진", "민재", "현준", "연우", "유준", "정우", "승우", "승현",
    "시윤", "서연", "서윤", "지우", "서현", "민서", "하은", "하윤", "윤서", "지유", "지민", "채원",
    "수아", "지아", "지윤", "은서", "다은", "예은", "수빈", "소율", "예린", "영수", "영희", "정훈",
    "미경", "은정", "지영", "현정", "상훈", "동현", "혜진", "수진", "민지", "유진", "재훈", "성호",
    "경민", "태현", "승민", "정민", "영호", "순자", "말순", "옥자", "광수", "미숙",
];

pub const NICK_ADJECTIVES: &[&str] = &[
    "행복한",
    "건강한",
    "씩씩한",
    "졸린",
    "배고픈",
    "용감한",
    "상냥한",
    "느긋한",
    "귀여운",
    "즐거운",
    "부지런한",
    "명랑한",
    "조용한",
    "튼튼한",
    "활기찬",
];

pub const NICK_NOUNS: &[&str] = &[
    "고양이",
    "강아지",
    "다람쥐",
    "토끼",
    "판다",
    "펭귄",
    "호랑이",
    "곰돌이",
    "수달",
    "여우",
    "부엉이",
    "거북이",
    "코알라",
    "햄스터",
    "돌고래",
];

/// City, relative population, districts.
pub const CITIES: &[(&str, u32, &[&str])] = &[
    (
        "서울특별시",
        190,
        &[
            "강남구",
            "서초구",
            "송파구",
            "마포구",
            "영등포구",
            "관악구",
            "노원구",
            "강서구",
            "종로구",
            "성북구",
            "은평구",
            "광진구",
        ],
    ),
    (
        "부산광역시",
        66,
        &["해운대구", "수영구", "부산진구", "동래구", "사하구"],
    ),
    ("인천광역시", 59, &["연수구", "남동구", "부평구", "서구"]),
    ("대구광역시", 47, &["수성구", "달서구", "북구"]),
    ("대전광역시", 29, &["유성구", "서구", "대덕구"]),
    ("광주광역시", 29, &["북구", "서구", "광산구"]),
    ("울산광역시", 22, &["남구", "중구", "울주군"]),
    ("세종특별자치시", 8, &["조치원읍", "한솔동", "도담동"]),
    ("수원시", 24, &["영통구", "팔달구", "장안구", "권선구"]),
    ("성남시", 18, &["분당구", "수정구", "중원구"]),
    ("고양시", 21, &["일산동구", "일산서구", "덕양구"]),
    ("용인시", 21, &["수지구", "기흥구", "처인구"]),
    ("청주시", 17, &["흥덕구", "상당구", "청원구"]),
    ("전주시", 13, &["완산구", "덕진구"]),
    ("창원시", 20, &["성산구", "의창구", "마산합포구"]),
    ("제주시", 10, &["노형동", "연동", "아라동"]),
];

pub const ROADS: &[&str] = &[
    "테헤란로",
    "중앙로",
    "한강대로",
    "세종대로",
    "올림픽로",
    "경인로",
    "해운대로",
    "시청로",
    "문화로",
    "대학로",
    "번영로",
    "평화로",
    "희망로",
    "동서로",
    "월드컵로",
    "충장로",
    "금강로",
    "은행나무길",
];

pub const BUILDINGS: &[&str] = &[
    "래미안",
    "자이",
    "힐스테이트",
    "푸르지오",
    "아이파크",
    "e편한세상",
    "롯데캐슬",
    "더샵",
    "주공아파트",
    "한신아파트",
    "현대아파트",
    "센트럴타워",
];

pub const ALNUM: &[u8] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789";
